"""Train a small 3D segmentation model on random crops streamed by damacy.

The data are made once in --workdir: an image volume written by damacy's
`write_example_volume` (uint16, a synthetic microscopy stack with bright spots) and a label
volume derived from it by thresholding (uint8: 1 = spot), written with zarr-python. Then a
few conv layers learn to find the spots from random (image, label) crops of a CropDataset,
and a GridCrops pass stitches predictions over the whole volume to score them.

    python examples/train_segmentation.py --steps 200 [--device cuda] [--workers 2]

Runs on the CPU in CI (tests/test_data.py runs 3 steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

import damacy
from damacy.data import CropDataset, GridCrops, RandomCrops, to_device

SHAPE = (32, 96, 96)
CHUNK = (16, 32, 32)
SHARD = (32, 96, 96)
THRESHOLD = 400  # spots peak at 400..2800 over a background near 100


def make_volumes(workdir: Path) -> tuple[str, str]:
    """The image (written by damacy) and its label (image > THRESHOLD, by zarr-python)."""
    import zarr

    image, label = workdir / "image.zarr", workdir / "label.zarr"
    if not (image / "zarr.json").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        torch.ops.damacy.write_example_volume(str(image), list(SHAPE), list(CHUNK), list(SHARD), "zstd", 0)
    if not (label / "zarr.json").exists():
        # Read the whole image through damacy (one sample covering it), threshold, write.
        cfg = damacy.Config(samples_per_batch=1, sample_shape=SHAPE, dtype="i32")
        with damacy.Pipeline(cfg) as pipe:
            pipe.push(damacy.Sample(str(image), [(0, n) for n in SHAPE]))
            values = pipe.pop()[0]
        mask = (values > THRESHOLD).to(torch.uint8).numpy()
        arr = zarr.create_array(str(label), shape=SHAPE, chunks=CHUNK, shards=SHARD, dtype="uint8",
                                fill_value=0, compressors=zarr.codecs.ZstdCodec(level=3))
        arr[...] = mask
    return str(image), str(label)


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv3d(8, 2, 1),
    )


def normalise(image: torch.Tensor) -> torch.Tensor:
    """[B, *S] raw intensities -> [B, 1, *S] roughly in [-1, 3]."""
    return ((image - 200.0) / 300.0).unsqueeze(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4, help="samples per batch")
    p.add_argument("--sample", type=int, nargs=3, default=[16, 32, 32], metavar=("Z", "Y", "X"))
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: the pipeline runs in this process)")
    p.add_argument("--device", default="cpu", help='"cpu" or "cuda[:N]"')
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=str(Path.home() / ".cache" / "damacy" / "example" / "segmentation"))
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    image, label = make_volumes(Path(args.workdir))
    arrays = [{"image": image, "label": label}]
    config = damacy.Config(n_io_threads=2)

    # Training: endless random crops; the label stays integer (i64 for cross_entropy).
    train = CropDataset(arrays, RandomCrops(args.sample, seed=args.seed), samples_per_batch=args.batch,
                        dtype={"image": "f32", "label": "i64"}, device=str(device), config=config)
    loader = DataLoader(train, batch_size=None, num_workers=args.workers,
                        pin_memory=device.type == "cuda" and args.workers > 0)
    net = model().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    weight = torch.tensor([1.0, 10.0], device=device)  # spots are rare
    t0 = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        batch = to_device(batch, device)  # workers hand over CPU (pinned) batches
        logits = net(normalise(batch["image"]))
        loss = nn.functional.cross_entropy(logits, batch["label"], weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % 10 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
        if step >= args.steps:
            break

    # Inference: a grid over the whole volume, predictions stitched back, scored.
    grid = CropDataset(arrays, GridCrops(args.sample, edge="pad"), samples_per_batch=args.batch,
                       dtype={"image": "f32", "label": "u8"}, device=str(device), config=config, return_meta=True)
    stitcher = grid.stitcher(dtype=torch.int64, device="cpu")
    truth = grid.stitcher(dtype=torch.uint8, device="cpu")
    net.eval()
    with torch.no_grad():
        for batch, meta in DataLoader(grid, batch_size=None):
            batch = to_device(batch, device)
            stitcher.add(net(normalise(batch["image"])).argmax(1), meta)
            truth.add(batch["label"], meta)
    pred, want = stitcher.result()[0], truth.result()[0].to(torch.int64)
    inter = int(((pred == 1) & (want == 1)).sum())
    dice = 2 * inter / max(int((pred == 1).sum()) + int((want == 1).sum()), 1)
    print(f"grid: {grid.num_samples()} crops, voxel accuracy {float((pred == want).float().mean()):.4f}, spot dice {dice:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
