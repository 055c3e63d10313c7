"""medauc's training step against a bare timm + PyTorch loop: same model, batch and tensors.

Prints, per model, images/s of both (median over interleaved rounds, so that noise from shared
cores hits both alike), their ratio (goal >= 0.95) and the share of medauc's step spent waiting
for data (goal <= 5%; images come from the in-memory uint8 cache, flipped and normalised per batch).
The CPU-time ratio (images per CPU-second) is the steadier number on busy shared machines,
especially with ``--threads 1``.

    GLIBC_TUNABLES=... HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/throughput.py [--models resnet18,efficientnet_b0] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import timm
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medauc.classify import distributed as ddp
from medauc.classify.train import Trainer, mixed_precision
from medauc.config import load_config
from medauc.data.datasets import ImageSet
from medauc.device import resolve_device

CLASSES = ["healthy", "glioma", "meningioma", "pituitary"]


def bare_epoch(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]],
    autocast=nullcontext, scaler: torch.amp.GradScaler | None = None,
) -> float:
    """The textbook loop over ready-made float batches (on the device, AMP as medauc's); returns seconds."""
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        with autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(name: str, size: int, batch: int, n: int, rounds: int, threads: int, device: str = "cpu", amp_dtype: str = "auto") -> dict[str, float]:
    torch.set_num_threads(threads)
    cfg = load_config("demo", [
        f"model.names=[{name}]", f"data.image_size={size}", f"train.batch_size={batch}", "train.hflip=true",
        f"train.device={device}", f"train.amp_dtype={amp_dtype}",
    ])
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, len(CLASSES), (n,), generator=gen)
    train = ImageSet([str(i) for i in range(n)], labels, images, CLASSES, pd.DataFrame())
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, name, 0, CLASSES, Path(tmp), "bench", ddp.Dist(device=resolve_device(cfg.train.device)))
        # The bare loop: same architecture and memory format, tensors already normalised and batched.
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=len(CLASSES), in_chans=1, **({"img_size": size} if trainer.net.pretrained_cfg.get("fixed_input_size") else {}))
        model = model.to(trainer.device)
        if trainer.channels_last:
            model = model.to(memory_format=torch.channels_last)
        autocast, scaler = mixed_precision(trainer.device, cfg.train)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, eps=cfg.train.eps)
        perm = torch.randperm(n, generator=gen)
        batches = [(trainer.transform(images[i]), labels[i].to(trainer.device)) for i in perm.split(batch) if len(i) == batch]
        used = len(batches) * batch
        ours, bare, ours_cpu, bare_cpu, wait = [], [], [], [], []
        bar = tqdm(disable=True)
        for r in range(rounds + 1):  # round 0 warms up both; who goes first alternates
            if r % 2:
                c0 = time.process_time()
                b = bare_epoch(model, opt, batches, autocast, scaler)
                bc = time.process_time() - c0
            c0 = time.process_time()
            _, seconds, w = trainer.train_epoch(train, None, bar)
            oc = time.process_time() - c0
            if not r % 2:
                c0 = time.process_time()
                b = bare_epoch(model, opt, batches, autocast, scaler)
                bc = time.process_time() - c0
            if r:
                ours.append(used / seconds)
                bare.append(used / b)
                ours_cpu.append(used / oc)
                bare_cpu.append(used / bc)
                wait.append(w)
    o, b = statistics.median(ours), statistics.median(bare)
    cpu_ratio = statistics.median(ours_cpu) / statistics.median(bare_cpu)
    return {"model": name, "size": size, "device": str(trainer.device), "precision": trainer.precision, "medauc_img_s": o, "bare_img_s": b, "ratio": o / b, "cpu_ratio": cpu_ratio,
            "data_wait": statistics.median(wait)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,efficientnet_b0")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda: mixed precision as in training, both loops)")
    ap.add_argument("--amp-dtype", default="auto", help="auto, bf16 or fp16 (cuda only)")
    args = ap.parse_args()
    print(f"device {args.device}")
    print(f"{'model':<24}{'px':>5}{'medauc img/s':>14}{'bare img/s':>12}{'ratio':>8}{'CPU-time ratio':>16}{'data wait':>11}")
    for name in args.models.split(","):
        r = bench(name, args.size, args.batch, args.images, args.rounds, args.threads, args.device, args.amp_dtype)
        print(f"{r['model']:<24}{r['size']:>5}{r['medauc_img_s']:>14.1f}{r['bare_img_s']:>12.1f}{r['ratio']:>8.3f}{r['cpu_ratio']:>16.3f}{r['data_wait']:>10.1%}  {r['precision']}", flush=True)


if __name__ == "__main__":
    main()
