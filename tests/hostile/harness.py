"""The parent side: writes the good array once, runs each case in its own child process
(run_case.py) with a wall-clock timeout, a small pool of them at a time, and classifies
what came back.

Verdicts: "typed" (the expected typed error), "values" (correct values), "crash" (the
child died: a signal, or no result), "hang" (past its timeout, killed), "wrong_data",
"wrong_error" (the wrong class or message, an untyped exception, no error at all),
"unhealthy" (the case passed but the valid read after it failed), "rss" (peak RSS over
the bound), "skipped". `ok` is typed/values/skipped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import common as H  # noqa: E402
import cases  # noqa: E402,F401

OK = ("typed", "values", "skipped")


@dataclass
class Verdict:
    case: str
    device: str
    verdict: str
    detail: str = ""
    wall_s: float = 0.0
    peak_rss: int = 0
    baseline_rss: int = 0
    bound: int = 0
    result: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict in OK


def write_good(root: Path) -> Path:
    """The good array every child reads after its case: shape=[16,16,16] uint16,
    inner=[4,4,4], shard=[8,8,8]: 64 chunks in 8 shards, zstd; and its values as .npy."""
    import numpy as np
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

    import fixtures as F

    root.mkdir(parents=True, exist_ok=True)
    data = F.make_values("uint16", (16, 16, 16), seed=77)
    a = zarr.create(store=str(root / "good.zarr"), shape=(16, 16, 16), chunks=(8, 8, 8), dtype="uint16",
                    codecs=[ShardingCodec(chunk_shape=(4, 4, 4), codecs=[BytesCodec(), ZstdCodec(level=1)],
                                          index_codecs=[BytesCodec(), Crc32cCodec()])],
                    fill_value=0, zarr_format=3, overwrite=True)
    a[...] = data
    np.save(root / "good.npy", data)
    return root


def child_env() -> dict:
    env = dict(os.environ)
    py = os.environ.get("DAMACY_HOSTILE_PYTHONPATH", str(REPO / "python"))
    env["PYTHONPATH"] = py + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class Server:
    """One fork server (run_case.py --serve) and a thread reading its answers."""

    def __init__(self, device: str, python: str = sys.executable, nice: int = 10) -> None:
        import queue
        import threading

        # CUDA reserves far more address space than any limit that would mean something.
        self.limit = H.AS_LIMIT if device == "cpu" else 0
        cmd = [python, str(HERE / "run_case.py"), "--serve", "--as-limit", str(self.limit)]
        if nice:
            cmd = ["nice", "-n", str(nice), *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(),
                                     text=True, bufsize=1)
        self.answers: "queue.Queue[dict | None]" = queue.Queue()

        def reader():
            for line in self.proc.stdout:
                try:
                    self.answers.put(json.loads(line))
                except ValueError:
                    pass
            self.answers.put(None)

        threading.Thread(target=reader, daemon=True).start()

    def run(self, name: str, device: str, good: Path, tmp: Path, timeout_s: float) -> tuple[int | None, bool, float]:
        """(wait status or None, hung, wall seconds) of one case's child."""
        req = {"case": name, "tmp": str(tmp / "t"), "good": str(good), "result": str(tmp / "result.json"), "device": device}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        first = self.answers.get(timeout=120)
        if first is None:
            return None, False, 0.0
        pid, t0 = first["pid"], time.monotonic()
        try:
            done = self.answers.get(timeout=timeout_s)
            hung = False
        except Exception:  # noqa: BLE001 - queue.Empty: past the timeout
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            done = self.answers.get(timeout=60)
            hung = True
        return (None if done is None else done["status"]), hung, time.monotonic() - t0

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def classify(name: str, device: str, tmp: Path, status: int | None, hung: bool, wall: float) -> Verdict:
    c = H.ALL[name]
    res = tmp / "result.json"
    tail, whole = "", ""
    if (tmp / "output.txt").exists():
        whole = (tmp / "output.txt").read_bytes()[:1 << 20].decode("utf-8", "replace")
        tail = whole[-1500:]
    result = {}
    if res.exists():
        try:
            result = json.loads(res.read_text())
        except ValueError:
            result = {}
    v = Verdict(name, device, "", wall_s=wall, result=result, peak_rss=result.get("peak_hwm", 0),
                baseline_rss=result.get("baseline_hwm", 0), bound=result.get("bound", 0))
    phase = result.get("phase", "start")
    if hung:
        v.verdict, v.detail = "hang", f"killed after {c.timeout_s:.0f} s in phase {phase}; output: {tail[-400:]}"
    elif status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or phase != "exit":
        if status is not None and os.WIFSIGNALED(status):
            why = f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        else:
            why = f"exit {os.WEXITSTATUS(status) if status is not None else '?'}"
        first = next((ln.strip() for ln in whole.splitlines()
                      if "memory allocation" in ln or "panicked" in ln or "Error" in ln or "Fatal" in ln), "")
        v.verdict, v.detail = "crash", f"{why} in phase {phase}; {first or tail[-300:]}"
    elif result.get("outcome") == "skipped":
        v.verdict, v.detail = "skipped", result.get("detail", "")
    elif result.get("outcome") in ("wrong_data", "wrong_error"):
        v.verdict, v.detail = result["outcome"], result.get("detail", "")
    elif not result.get("healthy"):
        v.verdict, v.detail = "unhealthy", result.get("healthy_detail", "")
    elif v.peak_rss > v.bound:
        v.verdict = "rss"
        v.detail = f"peak RSS {v.peak_rss >> 20} MiB > bound {v.bound >> 20} MiB (baseline {v.baseline_rss >> 20} MiB)"
    else:
        v.verdict = result.get("outcome", "crash")
        v.detail = "; ".join(result.get("notes", []))[:500]
    return v


def run_many(names, device="cpu", jobs=2, work: Path | None = None, progress=None) -> list[Verdict]:
    """Runs `names`, `jobs` fork servers at a time; returns verdicts in the order of `names`."""
    import threading

    own = work is None
    work = Path(tempfile.mkdtemp(prefix="damacy-hostile-")) if own else Path(work)
    good = write_good(work / "good")
    todo = list(enumerate(names))
    out: dict[int, Verdict] = {}
    lock = threading.Lock()

    def worker():
        server = None
        try:
            while True:
                with lock:
                    if not todo:
                        return
                    i, name = todo.pop(0)
                c = H.ALL[name]
                if device != "cpu" and "cuda" not in c.devices:
                    v = Verdict(name, device, "skipped", "cpu only")
                else:
                    try:
                        if server is None or server.proc.poll() is not None:
                            server = Server(device)
                        tmp = work / f"{name}-{device.replace(':', '')}"
                        tmp.mkdir(parents=True, exist_ok=True)
                        status, hung, wall = server.run(name, device, good, tmp, c.timeout_s)
                        v = classify(name, device, tmp, status, hung, wall)
                    except Exception as e:  # noqa: BLE001 - a harness failure is a verdict, not a lost case
                        v = Verdict(name, device, "harness", f"the harness failed on this case: {type(e).__name__}: {e}")
                        if server is not None:
                            server.close()
                        server = None
                with lock:
                    out[i] = v
                    if progress:
                        progress(v)
        finally:
            if server is not None:
                server.close()

    try:
        threads = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [out[i] for i in range(len(names))]
    finally:
        if own:
            import shutil
            # FIFOs, loops and sparse files included: rmtree handles them (no following).
            shutil.rmtree(work, ignore_errors=True)


COLUMNS = [("tried", None), ("typed errors", "typed"), ("correct values", "values"), ("crashes", "crash"),
           ("hangs", "hang"), ("wrong data", "wrong_data"), ("wrong error", "wrong_error"),
           ("unhealthy after", "unhealthy"), ("RSS over bound", "rss"), ("harness failures", "harness"),
           ("skipped", "skipped")]


def summary(verdicts: list[Verdict]) -> dict:
    out = {}
    for label, key in COLUMNS:
        out[label] = len(verdicts) if key is None else sum(v.verdict == key for v in verdicts)
    return out


def cases_for(device: str) -> list[str]:
    return [n for n, c in H.CASES.items() if device == "cpu" or "cuda" in c.devices]
