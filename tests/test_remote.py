"""damacy.Pipeline over object stores against real loopback servers (tests/remote_servers.py:
moto's S3 server and a ranged HTTP file server), compared with zarr-python.

The oracle is zarr-python reading the *local copy* of the uploaded files: reading S3 or
HTTP with zarr-python needs fsspec's s3fs/aiohttp, which the project venv does not carry;
the bytes served are the same files, so this still checks every remote read bit for bit.

Geometry: shape=[24,40,36] uint16, zstd, inner chunks [8,8,12], shards [8,16,24]:
3×3×2 shards, shard c/1/1/1 removed (fill 7). Skipped when the venv has no moto
(dev/remote-servers.sh installs it; dev/test.sh runs that).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("moto.server", reason="moto[server] missing: run dev/remote-servers.sh")

import damacy  # noqa: E402
import zarr  # noqa: E402
from damacy.data import CropDataset, RandomCrops  # noqa: E402
from remote_servers import s3_client, upload_tree  # noqa: E402

HERE = Path(__file__).parent
SHAPE, INNER, SHARD, FILL = (24, 40, 36), (8, 8, 12), (8, 16, 24), 7


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("damacy-remote")
    rng = np.random.default_rng(5)
    data = rng.integers(0, 4000, size=SHAPE, dtype=np.uint16)
    arr = zarr.create_array(
        store=str(root / "vol.zarr"), shape=SHAPE, chunks=INNER, shards=SHARD, dtype="uint16",
        compressors=zarr.codecs.ZstdCodec(level=3), fill_value=FILL, zarr_format=3,
    )
    arr[...] = data
    os.remove(root / "vol.zarr" / "c" / "1" / "1" / "1")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "remote_servers.py"), "--root", str(root), "--emulators", "gcs,az"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        info = json.loads(proc.stdout.readline())
        yield root, info
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def s3_options(info) -> dict[str, str]:
    return {"endpoint": info["s3"], "allow_http": "true", "access_key_id": "test",
            "secret_access_key": "test", "region": "us-east-1"}


def boxes(n: int, size, seed: int = 3):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        starts = [int(rng.integers(0, s - k + 1)) for s, k in zip(SHAPE, size)]
        out.append([(a, a + k) for a, k in zip(starts, size)])
    out.append([(8, 8 + size[0]), (16, 16 + size[1]), (24 - size[2] // 2, 24 + size[2] - size[2] // 2)])
    return out


def read_all(uri: str, size, bxs, **cfg) -> list[np.ndarray]:
    config = damacy.Config(samples_per_batch=1, sample_shape=size, n_io_threads=2, **cfg)
    with damacy.Pipeline(config) as pipe:
        pipe.push([damacy.Sample(uri, b) for b in bxs])
        return [pipe.pop(timeout_s=30).numpy()[0].copy() for _ in bxs]


@pytest.mark.parametrize("where", ["s3", "http"])
def test_remote_reads_match_zarr_python(served, where):
    root, info = served
    oracle = zarr.open_array(str(root / "vol.zarr"), mode="r")
    size = (6, 10, 14)
    bxs = boxes(6, size)
    if where == "s3":
        got = read_all(f"s3://{info['bucket']}/vol.zarr", size, bxs, storage_options=s3_options(info))
    else:
        got = read_all(f"{info['http']}/vol.zarr", size, bxs)
    for b, g in zip(bxs, got):
        want = oracle[tuple(slice(a, z) for a, z in b)].astype(np.float32)
        np.testing.assert_array_equal(g, want, err_msg=f"{where} {b}")
    assert (got[-1] == FILL).any(), "the box over the removed shard reads fill"


def test_config_carries_storage_options(served):
    _, info = served
    cfg = damacy.Config(storage_options=s3_options(info))
    assert cfg.storage_options["endpoint"] == info["s3"]
    assert damacy.Config.from_json(cfg.to_json()) == cfg
    with pytest.raises(damacy.InvalidArgument, match="storage_options"):
        damacy.Config(storage_options={"endpiont": "x"})


def test_remote_errors_are_typed(served):
    _, info = served
    size = (4, 4, 4)
    box = [[(0, 4), (0, 4), (0, 4)]]
    with pytest.raises(damacy.NotFound, match="no-such-bucket"):
        read_all("s3://no-such-bucket/vol.zarr", size, box, storage_options=s3_options(info))
    with pytest.raises(damacy.NotFound, match="absent.zarr"):
        read_all(f"{info['http']}/absent.zarr", size, box)
    with pytest.raises(damacy.StorageError, match="403"):
        read_all(f"{info['http']}/forbidden/vol.zarr", size, box)


def test_crop_dataset_takes_remote_uris(served, monkeypatch):
    root, info = served
    # The dataset reads shapes through damacy.array_info, which takes credentials and the
    # endpoint from the environment (the standard AWS_* variables).
    for k, v in {"AWS_ENDPOINT_URL": info["s3"], "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                 "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    uri = f"s3://{info['bucket']}/vol.zarr"
    assert damacy.data.array_shape(uri) == SHAPE
    ds = CropDataset([uri, f"{info['http']}/vol.zarr"], RandomCrops((4, 8, 8), seed=1, num_samples=4), samples_per_batch=2)
    assert ds.arrays == [uri, f"{info['http']}/vol.zarr"], "remote uris are kept as given"
    batches = list(ds)
    assert len(batches) == 2 and tuple(batches[0].shape) == (2, 4, 8, 8)


def test_dataloader_workers_read_remote_after_fork(served, monkeypatch):
    """The parent opened stores (array_info) before forking: each worker must use its own
    runtime, not hang on the parent's (whose threads do not exist in the child)."""
    from torch.utils.data import DataLoader

    _, info = served
    for k, v in {"AWS_ENDPOINT_URL": info["s3"], "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
                 "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    ds = CropDataset([f"s3://{info['bucket']}/vol.zarr"], RandomCrops((4, 8, 8), seed=2, num_samples=8), samples_per_batch=2)
    inline = [b.clone() for b in ds]
    forked = list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60))
    assert len(forked) == len(inline) == 4
    for a, b in zip(inline, forked):
        assert (a == b).all()


def test_cli_info_reads_remote_metadata(served):
    """`python -m damacy info URL`: a plain HTTP server cannot list, so usage is left out."""
    _, info = served
    out = subprocess.run([sys.executable, "-m", "damacy", "info", "--json", f"{info['http']}/vol.zarr"],
                         capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["shape"] == list(SHAPE)


def _rewrite_shard_on_s3(root: Path, info, key: str, seed: int) -> np.ndarray:
    """Uploads a shard of another volume (same geometry, other values) over `key`; returns
    that volume's values."""
    other = root / f"other-{seed}.zarr"
    data = np.random.default_rng(seed).integers(0, 4000, size=SHAPE, dtype=np.uint16)
    arr = zarr.create_array(store=str(other), shape=SHAPE, chunks=INNER, shards=SHARD, dtype="uint16",
                            compressors=zarr.codecs.ZstdCodec(level=3), fill_value=FILL, zarr_format=3, overwrite=True)
    arr[...] = data
    s3 = s3_client(info["s3"])
    s3.upload_file(str(other / key), info["bucket"], f"vol.zarr/{key}")
    return data


@pytest.mark.parametrize("recheck", [True, 2.0, False])
def test_recheck_cached_data_on_s3(served, recheck, tmp_path):
    """Decoded-cache hits on S3: True checks the shard (a HEAD) every batch, a number of
    seconds only once that long after the shard was last confirmed, False never. The shard
    is rewritten on the server between reads; the box lies in shard c/0/0/0 only."""
    root, info = served
    key = "c/0/0/0"
    s3 = s3_client(info["s3"])
    original = s3.get_object(Bucket=info["bucket"], Key=f"vol.zarr/{key}")["Body"].read()
    box = [(1, 7), (2, 12), (3, 17)]
    want_old = zarr.open_array(str(root / "vol.zarr"), mode="r")[tuple(slice(a, z) for a, z in box)].astype(np.float32)
    uri = f"s3://{info['bucket']}/vol.zarr"
    cfg = damacy.Config(samples_per_batch=1, sample_shape=(6, 10, 14), n_io_threads=2, decoded_cache_bytes=1 << 24,
                        recheck_cached_data=recheck, storage_options=s3_options(info))
    assert cfg.recheck_cached_data == recheck
    try:
        with damacy.Pipeline(cfg) as pipe:
            def read():
                pipe.push(damacy.Sample(uri, box))
                return pipe.pop(timeout_s=30).numpy()[0].copy()

            np.testing.assert_array_equal(read(), want_old)
            t_read = time.monotonic()
            new = _rewrite_shard_on_s3(tmp_path, info, key, seed=11)
            want_new = new[tuple(slice(a, z) for a, z in box)].astype(np.float32)
            assert not np.array_equal(want_new, want_old)
            if recheck is True:
                with pytest.raises(damacy.StorageError, match=f"{key}.*changed"):
                    read()
                np.testing.assert_array_equal(read(), want_new, err_msg="the new shard is read after the error")
                return
            if recheck is False or time.monotonic() - t_read < 1.5:
                np.testing.assert_array_equal(read(), want_old, err_msg="within the interval: served from the cache, unchecked")
            if recheck is False:
                time.sleep(2.1)
                np.testing.assert_array_equal(read(), want_old, err_msg="never rechecked")
                return
            time.sleep(max(0.0, t_read + 2.1 - time.monotonic()))
            with pytest.raises(damacy.StorageError, match=f"{key}.*changed"):
                read()
            np.testing.assert_array_equal(read(), want_new)
    finally:
        s3.put_object(Bucket=info["bucket"], Key=f"vol.zarr/{key}", Body=original)


def _upload_array(info, root: Path, name: str, dtype: str, seed: int) -> np.ndarray:
    """Writes an unsharded zstd array `name` (SHAPE, chunks INNER) locally and uploads its
    files to the bucket under the same name, replacing what was there; returns its values."""
    local = root / f"{name}-{seed}"
    data = np.random.default_rng(seed).integers(-2000 if dtype == "int16" else 0, 4000, size=SHAPE).astype(dtype)
    arr = zarr.create_array(store=str(local), shape=SHAPE, chunks=INNER, dtype=dtype, compressors=zarr.codecs.ZstdCodec(level=3),
                            fill_value=0, zarr_format=3, overwrite=True)
    arr[...] = data
    upload_tree(s3_client(info["s3"]), str(local), info["bucket"], f"{name}/")
    return data


@pytest.mark.parametrize("recheck", [0.5, False])
def test_an_unsharded_array_recreated_on_s3_is_read_with_its_new_metadata(served, recheck, tmp_path):
    """zarr.json is rechecked (a HEAD) once the recheck interval has passed: an unsharded
    uint16 array recreated as int16 on the server is then read with its new metadata;
    with rechecks off the cached metadata stays (the new chunks read as uint16)."""
    _, info = served
    name = f"recreated-{str(recheck).lower()}.zarr"
    old = _upload_array(info, tmp_path, name, "uint16", seed=21)
    box = [(0, 8), (0, 8), (0, 12)]  # one chunk: c/0/0/0
    sl = tuple(slice(a, z) for a, z in box)
    cfg = damacy.Config(samples_per_batch=1, sample_shape=(8, 8, 12), n_io_threads=2, recheck_cached_data=recheck,
                        storage_options=s3_options(info))
    with damacy.Pipeline(cfg) as pipe:
        def read():
            pipe.push(damacy.Sample(f"s3://{info['bucket']}/{name}", box))
            return pipe.pop(timeout_s=30).numpy()[0].copy()

        np.testing.assert_array_equal(read(), old[sl].astype(np.float32))
        new = _upload_array(info, tmp_path, name, "int16", seed=22)
        assert (new[sl] < 0).any()
        time.sleep(0.8)
        got = read()
        if recheck is False:
            np.testing.assert_array_equal(got, new[sl].view(np.uint16).astype(np.float32), err_msg="never rechecked: old metadata")
        else:
            np.testing.assert_array_equal(got, new[sl].astype(np.float32), err_msg="rechecked after the interval: new metadata")


def test_recheck_cached_data_is_validated():
    assert damacy.Config().recheck_cached_data == 1.0
    assert damacy.Config(recheck_cached_data="open").recheck_cached_data == "open"
    with pytest.raises(damacy.InvalidArgument, match="recheck_cached_data"):
        damacy.Config(recheck_cached_data=-1)
    with pytest.raises(damacy.InvalidArgument, match="recheck_cached_data"):
        damacy.Config(recheck_cached_data="sometimes")


def _emulator(info, name: str) -> str:
    """The emulator's endpoint; skips (with why) when it could not start, but fails when CI
    is set (CI installs them: dev/remote-servers.sh)."""
    if info.get(name):
        return info[name]
    why = f"{name} emulator unavailable: {info.get(name + '_why')} (run dev/remote-servers.sh)"
    if os.environ.get("CI"):
        pytest.fail(why + "; CI is set, so this may not be skipped")
    pytest.skip(why)


def gcs_options(endpoint: str) -> dict[str, str]:
    """object_store's way to an emulator: a service account key naming the base url, no OAuth."""
    key = {"gcs_base_url": endpoint, "disable_oauth": True, "client_email": "", "private_key": "", "private_key_id": ""}
    return {"service_account_key": json.dumps(key)}


def az_options(endpoint: str) -> dict[str, str]:
    """Azurite's development account by its key and endpoint (object_store's use_emulator
    takes the port from AZURITE_BLOB_STORAGE_URL only; this also checks shared-key signing)."""
    from remote_servers import AZURITE_ACCOUNT, AZURITE_KEY

    return {"account_name": AZURITE_ACCOUNT, "access_key": AZURITE_KEY, "endpoint": f"{endpoint}/{AZURITE_ACCOUNT}",
            "allow_http": "true"}


@pytest.mark.parametrize("where", ["gs", "az"])
def test_gcs_and_azure_reads_match_zarr_python(served, where):
    """Random boxes through fake-gcs-server (gs://) and Azurite (az://), compared with
    zarr-python on the local copy of the same files; the box over the removed shard reads
    fill."""
    root, info = served
    endpoint = _emulator(info, "gcs" if where == "gs" else "az")
    opts = gcs_options(endpoint) if where == "gs" else az_options(endpoint)
    oracle = zarr.open_array(str(root / "vol.zarr"), mode="r")
    size = (6, 10, 14)
    bxs = boxes(8, size, seed=17)
    got = read_all(f"{where}://{info['bucket']}/vol.zarr", size, bxs, storage_options=opts)
    for b, g in zip(bxs, got):
        want = oracle[tuple(slice(a, z) for a, z in b)].astype(np.float32)
        np.testing.assert_array_equal(g, want, err_msg=f"{where} {b}")
    assert (got[-1] == FILL).any(), "the box over the removed shard reads fill"


@pytest.mark.parametrize("where", ["gs", "az"])
def test_gcs_and_azure_missing_objects_are_typed(served, where):
    root, info = served
    endpoint = _emulator(info, "gcs" if where == "gs" else "az")
    opts = gcs_options(endpoint) if where == "gs" else az_options(endpoint)
    box = [[(0, 4), (0, 4), (0, 4)]]
    with pytest.raises(damacy.NotFound, match="absent.zarr"):
        read_all(f"{where}://{info['bucket']}/absent.zarr", (4, 4, 4), box, storage_options=opts)
