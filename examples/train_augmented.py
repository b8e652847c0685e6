"""Train a small 3D segmentation model with what damacy.data offers beyond plain crops:

- a two-channel image (channel-last on disk, Zarr v3 dimension_names ["z", "y", "x", "c"])
  beside a label without channels: batches come channel-first, [B, 2, Z, Y, X];
- `LabelCrops`: half the crops centred on a spot voxel, half on background;
- `padding="reflect"`: crops centred near the border reach outside the volume, mirrored;
- `Augment`: random flips, 90-degree turns in the (Y, X) plane, intensity scale/shift and
  noise, run on the batch's device, image and label turned alike;
- `on_error="skip"`: a chunk that fails to decode costs its sample, not the run;
- the label's dtype defaults to "label" (u8 here: 1 byte per voxel through workers),
  widened with `.long()` on the device for cross_entropy.

The volumes come from examples/train_segmentation.py (`make_volumes`) plus the channel-last
image made from them once in --workdir.

    python examples/train_augmented.py --steps 200 [--device cuda] [--workers 2]

Runs on the CPU in CI (tests/test_training.py runs 3 steps); on CUDA with
`STAGES=augment bash dev/gpu/device_run.sh`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

import damacy  # noqa: E402
from damacy.data import Augment, CropDataset, LabelCrops, to_device  # noqa: E402
from train_segmentation import SHAPE, make_volumes  # noqa: E402


def make_channels(workdir: Path, image: str) -> str:
    """[Z, Y, X, 2]: the raw image and its square root (a second 'stain'), channel-last."""
    import zarr

    path = workdir / "image2c.zarr"
    if not (path / "zarr.json").exists():
        cfg = damacy.Config(samples_per_batch=1, sample_shape=SHAPE, dtype="f32")
        with damacy.Pipeline(cfg) as pipe:
            pipe.push(damacy.Sample(image, [(0, n) for n in SHAPE]))
            raw = pipe.pop()[0].clone()
        values = torch.stack([raw, raw.sqrt() * 20], dim=-1).clamp(0, 65535).numpy().astype("uint16")
        arr = zarr.create_array(str(path), shape=values.shape, chunks=(16, 32, 32, 2), dtype="uint16", fill_value=0,
                                compressors=zarr.codecs.ZstdCodec(level=3), dimension_names=["z", "y", "x", "c"])
        arr[...] = values
    return str(path)


def model() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(2, 8, 3, padding=1), nn.ReLU(),
        nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
        nn.Conv3d(8, 2, 1),
    )


def normalise(image: torch.Tensor) -> torch.Tensor:
    return (image - 200.0) / 300.0  # [B, 2, *S], already channel-first


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--sample", type=int, nargs=3, default=[16, 32, 32], metavar=("Z", "Y", "X"))
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=str(Path.home() / ".cache" / "damacy" / "example" / "segmentation"))
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    workdir = Path(args.workdir)
    image, label = make_volumes(workdir)
    image2c = make_channels(workdir, image)

    aug = Augment(seed=args.seed, flip_axes=(-3, -2, -1), rot90_plane=(-2, -1), scale=(0.9, 1.1), shift=(-20, 20),
                  noise_std=5.0)
    train = CropDataset(
        [{"image": image2c, "label": label}],
        LabelCrops(args.sample, seed=args.seed, foreground_ratio=0.5),
        samples_per_batch=args.batch, device=str(device), config=damacy.Config(n_io_threads=2),
        padding="reflect", on_error="skip",
        # Augment runs where the batch is assembled: in this process on `device`
        # (num_workers=0), or in each worker on the CPU.
        transform=aug,
    )
    train.build_index()  # once here, inherited by the workers
    print(f"dtypes {dict(zip(['image', 'label'], train.dtypes))}, label classes {train.sampler.index(label).classes()}")
    loader = DataLoader(train, batch_size=None, num_workers=args.workers,
                        pin_memory=device.type == "cuda" and args.workers > 0)
    net = model().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        batch = to_device(batch, device)
        assert batch["image"].shape[1] == 2 and batch["label"].dtype == torch.uint8
        logits = net(normalise(batch["image"]))
        loss = nn.functional.cross_entropy(logits, batch["label"].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 1 or step % 10 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
        if step >= args.steps:
            break
    print(f"on_error: {train.stats()['on_error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
