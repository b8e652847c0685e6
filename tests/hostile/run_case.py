"""Runs ONE hostile case in this process and writes its result as JSON.

    python tests/hostile/run_case.py CASE --tmp DIR --good DIR --result FILE [--device cpu]
                                          [--as-limit BYTES]
    python tests/hostile/run_case.py --serve --as-limit BYTES     (harness.py's fork server)

The harness runs a fork server per worker (`--serve`): it sets the limit, imports once,
and forks one child per case (the child exits normally after the case, so each case still
has a process of its own, its own peak RSS, and its own exit). Standalone, one case runs
in this process (to reproduce one).

Order matters: the address-space limit (RLIMIT_AS) is set first, before torch is imported,
so that an allocation a hostile input talks the library into fails inside the library
(OutOfMemory) instead of succeeding lazily. Then: import torch, damacy, zarr-python and
tests/fixtures.py; baseline = VmHWM; run the case; read the good array in the same process
and check its values; peak = VmHWM. The parent (harness.py) adds the wall-clock timeout
and classifies a missing result (a crash) or a timeout (a hang).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]


def _status(result: dict, out: Path) -> None:
    tmp = out.with_suffix(".part")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)


def _heavy_imports() -> None:
    import common as H
    import cases  # noqa: F401  (fills H.CASES)

    H.bind()


def run(name: str, tmp: Path, good_dir: Path, out: Path, device: str = "cpu", as_limit: int = 0) -> int:
    """Runs case `name` in this process (heavy modules imported); writes the result."""
    import numpy as np

    import common as H

    torch = H.torch
    result: dict = {"case": name, "device": device, "as_limit": as_limit, "phase": "start"}
    if device.startswith("cuda") and not torch.cuda.is_available():
        result.update(outcome="skipped", detail="no CUDA device", phase="exit")
        _status(result, out)
        return 0
    result["baseline_hwm"] = H.vm("VmHWM")
    c = H.ALL[name]
    tmp.mkdir(parents=True, exist_ok=True)
    good = good_dir / "good.zarr"
    ctx = H.Ctx(tmp=tmp, device=device, good_path=good, good_data=np.load(good_dir / "good.npy"))
    result["phase"] = "case"
    _status(result, out)  # a crash from here on leaves this: the parent reports where it died
    t1 = time.monotonic()
    try:
        c.fn(ctx)
        if c.expect == "error" and ctx.n_typed == 0:
            raise H.WrongError("the case expected a typed error and saw none")
        result["outcome"] = "typed" if c.expect == "error" else "values"
    except H.WrongData as e:
        result.update(outcome="wrong_data", detail=str(e)[:2000])
    except H.WrongError as e:
        result.update(outcome="wrong_error", detail=str(e)[:2000])
    except BaseException as e:  # noqa: BLE001 - anything else is a wrong outcome, reported
        result.update(outcome="wrong_error", detail=f"unexpected {type(e).__name__}: {e}"[:2000],
                      traceback=traceback.format_exc()[-3000:])
    result["case_s"] = round(time.monotonic() - t1, 3)
    result["notes"] = ctx.notes[-8:]
    try:
        ctx.close_all()
    except BaseException as e:  # noqa: BLE001
        result.setdefault("detail", f"close: {type(e).__name__}: {e}")

    # The process stays healthy: a valid read, values checked.
    result["phase"] = "healthy"
    _status(result, out)
    try:
        damacy = H.damacy
        boxes = [((0, 4), (0, 4), (0, 4)), ((5, 9), (3, 7), (9, 13)), ((12, 16), (12, 16), (0, 4)), ((7, 11), (6, 10), (5, 9))]
        cfg = ctx.config(samples_per_batch=len(boxes), lookahead_samples=8)
        with damacy.Pipeline(cfg) as p:
            p.push(damacy.Sample(str(good), b) for b in boxes)
            got = p.pop()
            want = np.stack([ctx.good_box(b) for b in boxes])
            H.F.assert_same(got.cpu(), torch.from_numpy(H.F._cast_f32(want)), "healthy read")
        result["healthy"] = True
    except BaseException as e:  # noqa: BLE001
        result["healthy"] = False
        result["healthy_detail"] = f"{type(e).__name__}: {e}"[:1000]
    result["healthy_s"] = round(time.monotonic() - t1 - result["case_s"], 3)
    result["peak_hwm"] = H.vm("VmHWM")
    result["budget"] = ctx.budget
    # CUDA: the runtime and nvCOMP map tens of MiB more after the baseline is taken.
    cuda_slack = (96 << 20) if str(getattr(ctx, "device", "cpu")).startswith("cuda") else 0
    result["bound"] = result["baseline_hwm"] + ctx.budget + H.RSS_SLACK + cuda_slack
    result["phase"] = "exit"
    _status(result, out)
    return 0


def serve(as_limit: int) -> int:
    """Fork server: imports once, then per request line {"case", "tmp", "good", "result",
    "device"} on stdin forks a child that runs the case and exits normally (so a pipeline
    that keeps a process from exiting shows as a hang). Answers {"pid"} when the child
    starts and {"pid", "status"} (os.waitpid's) when it ended. Nothing here starts a thread
    or touches CUDA before forking."""
    if as_limit:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    _heavy_imports()
    for line in sys.stdin:
        req = json.loads(line)
        tmp = Path(req["tmp"])
        tmp.mkdir(parents=True, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            log = os.open(str(tmp.parent / "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            sys.stdin = open(os.devnull)  # noqa: SIM115
            os.setpgid(0, 0)
            code = run(req["case"], tmp, Path(req["good"]), Path(req["result"]), req.get("device", "cpu"), as_limit)
            sys.stdout.flush()
            sys.stderr.flush()
            import common as H
            if H.ALL[req["case"]].exit_check:
                raise SystemExit(code)  # a normal interpreter exit: finalizers, atexit, threads
            # Tearing torch and zarr-python down takes ~2 s per child on 2 busy cores; the
            # cases that test exiting (exit_check) pay it, the others leave at once.
            os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "status": status}), flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", nargs="?")
    ap.add_argument("--serve", action="store_true", help="fork server mode (harness.py)")
    ap.add_argument("--tmp")
    ap.add_argument("--good")
    ap.add_argument("--result")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--as-limit", type=int, default=0)
    a = ap.parse_args(argv)
    if a.serve:
        return serve(a.as_limit)
    if a.as_limit:
        resource.setrlimit(resource.RLIMIT_AS, (a.as_limit, a.as_limit))
    _heavy_imports()
    return run(a.case, Path(a.tmp), Path(a.good), Path(a.result), a.device, a.as_limit)


if __name__ == "__main__":
    sys.exit(main())
