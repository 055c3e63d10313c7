"""The one training loop, for every timm classifier, under the study's protocol.

All parameters trainable; Adam (lr, weight_decay, eps); cross-entropy (optionally weighted by
inverse class frequency, or a class-balanced sampler); ReduceLROnPlateau and early stopping on
the monitored loss (the validation split's; ``train.monitor=test`` reproduces the study's test-set
leak and says so); random horizontal flips from a seeded generator.

:class:`Trainer` trains one model with one seed: :meth:`Trainer.fit` runs epochs of
:meth:`Trainer.train_epoch` and writes ``history.csv``, ``best.safetensors``, ``model.json`` and,
after every epoch, ``last.pt`` (everything needed to resume bit for bit) to its model folder.
Which models and seeds train, and their folders and predictions files: :mod:`medauc.classify.stage`.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from medauc.progress import Progress, progress_bar

from medauc import allocator, fileio, reproducibility
from medauc.classify import distributed as ddp
from medauc.classify.checkpoint import rng_state, set_rng_state
from medauc.classify.models import InputTransform, create_model, input_stats
from medauc.classify.predict import predict_logits
from medauc.config import Config, TrainConfig, to_dict
from medauc.data.datasets import ImageSet
from medauc.device import AMP_DTYPES, amp_context
from medauc.errors import ModelError

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_auc", "lr", "seconds", "images_per_s",
    "data_wait_fraction", "monitored_split", "test_leak",
]
IMBALANCE = ("none", "weighted_loss", "balanced_sampler")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("plateau", "onecycle")


# ----------------------------------------------------------------------------- small pieces


def macro_auc(y: np.ndarray, prob: np.ndarray) -> float:
    """One-vs-rest macro AUC of probabilities (N, C); nan when a class is missing from ``y``."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < prob.shape[1]:
        return float("nan")
    if prob.shape[1] == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    return float(roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=list(range(prob.shape[1]))))


def one_cycle_lr(step: int, total: int, max_lr: float, warmup: float, div: float = 25.0, final_div: float = 1e4) -> float:
    """Learning rate at ``step`` (0-based) of ``total`` under the one-cycle policy (Smith & Topin 2019).

    Cosine rise from ``max_lr / div`` to ``max_lr`` over the first ``warmup`` share of the steps, then
    cosine decay to ``max_lr / div / final_div``: the values of ``torch.optim.lr_scheduler.OneCycleLR``
    (its defaults), computed from the step number alone so that a resumed run needs no scheduler state.
    """
    start, end = max_lr / div, max_lr / div / final_div
    up = float(warmup * total) - 1
    if step <= up:
        pct, lo, hi = step / up if up > 0 else 1.0, start, max_lr
    else:
        pct, lo, hi = (step - up) / (total - 1 - up), max_lr, end
    return hi + (lo - hi) * (math.cos(math.pi * min(max(pct, 0.0), 1.0)) + 1) / 2


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised so that a balanced set gets weight 1 for every class."""
    counts = torch.bincount(labels, minlength=num_classes).double()
    return (len(labels) / (num_classes * counts.clamp(min=1))).float()


def epoch_plan(
    labels: torch.Tensor, batch_size: int, gen: torch.Generator, balanced: bool, hflip: bool, world: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's global batches as (indices, flip mask), drawn from ``gen`` only.

    A class-balanced epoch draws N indices with replacement, each class equally likely. A last
    batch with fewer than two images per process is dropped: batch norm cannot train on one.
    """
    n = len(labels)
    if balanced:
        counts = torch.bincount(labels).double()
        idx = torch.multinomial((1.0 / counts)[labels], n, replacement=True, generator=gen)
    else:
        idx = torch.randperm(n, generator=gen)
    batches = list(idx.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2 * world:
        batches.pop()
    flips = torch.rand(n, generator=gen) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    out, start = [], 0
    for b in batches:
        out.append((b, flips[start : start + len(b)]))
        start += len(b)
    return out


def random_affine(x: torch.Tensor, u: torch.Tensor, strength: float) -> torch.Tensor:
    """Rotate, scale and shift each image of ``x`` (N, C, S, S) by uniform draws ``u`` (N, 4) in [0, 1).

    ``strength`` 1 = up to +/-15 degrees, +/-15% scale, +/-10% shift; pixels from outside repeat the border.
    """
    u = (u.to(x.device) * 2 - 1) * strength
    angle = u[:, 0] * math.radians(15)
    scale = 1 + 0.15 * u[:, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, 0.2 * u[:, 2]], 1), torch.stack([sin, cos, 0.2 * u[:, 3]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x.contiguous(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def mixed_precision(device: torch.device, tc: TrainConfig) -> tuple[Any, torch.amp.GradScaler | None]:
    """What the trainer uses: :func:`amp_context` on CUDA when ``train.amp`` is on, else float32."""
    if tc.amp_dtype not in AMP_DTYPES:  # checked on every device, so a typo fails on CPU too
        raise ModelError(f"train.amp_dtype={tc.amp_dtype!r}: use one of {', '.join(AMP_DTYPES)}")
    if tc.amp and device.type == "cuda":
        return amp_context("cuda", tc.amp_dtype)
    return nullcontext, None


# ----------------------------------------------------------------------------- the monitored split


def split_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss (mean cross-entropy), accuracy and macro AUC of logits (N, C) against labels (N,)."""
    prob = torch.softmax(logits.double(), dim=1).numpy()
    y = labels.numpy()
    return {
        "loss": float(F.cross_entropy(logits.double(), labels)),
        "accuracy": float((prob.argmax(1) == y).mean()),
        "macro_auc": macro_auc(y, prob),
    }


# ----------------------------------------------------------------------------- one model, one seed


class Trainer:
    """Trains one model with one seed on in-memory image sets; resumes from ``last.pt``."""

    def __init__(
        self, cfg: Config, model_name: str, seed: int, classes: list[str], model_dir: Path, key: str,
        d: ddp.Dist = ddp.Dist(), init_weights: bool = True,
    ) -> None:
        self.cfg, self.model_name, self.seed, self.classes = cfg, model_name, seed, classes
        self.model_dir, self.key, self.d = Path(model_dir), key, d
        self.device = d.device
        tc = cfg.train
        if tc.imbalance not in IMBALANCE:
            raise ModelError(f"train.imbalance={tc.imbalance!r}: use one of {', '.join(IMBALANCE)}")
        if tc.monitor not in ("val", "test"):
            raise ModelError(f"train.monitor={tc.monitor!r}: use val (default) or test (the study's leaky protocol)")
        if tc.optimizer not in OPTIMIZERS:
            raise ModelError(f"train.optimizer={tc.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if tc.schedule not in SCHEDULES:
            raise ModelError(f"train.schedule={tc.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if not 0.0 < tc.warmup < 1.0:
            raise ModelError(f"train.warmup={tc.warmup}: the share of steps spent warming up, 0 < warmup < 1 (e.g. 0.25)")
        if not 0.0 <= tc.label_smoothing < 1.0:
            raise ModelError(f"train.label_smoothing={tc.label_smoothing}: use 0 <= label_smoothing < 1 (e.g. 0.1; 0 = off)")
        reproducibility.seed_everything(seed)
        self.net = create_model(
            model_name, len(classes), cfg.model.in_chans, cfg.data.image_size,
            # A finished or resumed model gets its weights from its own checkpoint, not from a download.
            pretrained=cfg.model.pretrained and init_weights, weights=cfg.model.weights if init_weights else "",
            drop_rate=cfg.model.drop_rate, zero_head=tc.zero_head,
        )
        mean, std = input_stats(self.net, cfg.model.in_chans)
        self.channels_last = tc.channels_last
        self.net.to(self.device)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.meta: dict[str, Any] = {
            "model_name": model_name, "classes": classes, "image_size": cfg.data.image_size,
            "in_chans": cfg.model.in_chans, "mean": mean, "std": std, "seed": seed, "drop_rate": cfg.model.drop_rate,
            "channels_last": self.channels_last, "torch_threads": torch.get_num_threads(), "monitor": tc.monitor, "test_leak": tc.monitor == "test",
            "num_params": sum(p.numel() for p in self.net.parameters()), "key": key,
            "config": {s: to_dict(getattr(cfg, s)) for s in ("model", "train", "data")},
        }
        self.transform = InputTransform(self.meta, self.device, self.channels_last)
        self.model: nn.Module = self.net
        if d.enabled and tc.sync_bn:
            # Each rank sees only its slice of the global batch: without this its BatchNorm would
            # normalise with that slice's statistics, and training would depend on the process count.
            self.net = ddp.convert_sync_batchnorm(self.net, d)
            self.model = self.net
        if d.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        optimizer = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
        self.opt = optimizer(self.net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, eps=tc.eps)
        self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience
        )
        self.autocast, self.scaler = mixed_precision(self.device, tc)
        self.meta["precision"] = self.precision
        self._on_device: tuple[torch.Tensor, torch.Tensor] | None = None  # (CPU images, their copy on the GPU)
        self.gen = torch.Generator().manual_seed(seed)
        self.history: list[dict[str, Any]] = []
        self.epoch = 0  # finished epochs
        self.best_loss, self.best_epoch, self.bad_epochs, self.stopped = math.inf, 0, 0, False

    @property
    def precision(self) -> str:
        """The compute dtype of the forward pass: "float32", "bfloat16" or "float16"."""
        with self.autocast():
            on = torch.is_autocast_enabled(self.device.type)
            return str(torch.get_autocast_dtype(self.device.type)).removeprefix("torch.") if on else "float32"

    # --------------------------------------------------------------------- checkpointing
    @property
    def last_path(self) -> Path:
        return self.model_dir / "last.pt"

    def state(self) -> dict[str, Any]:
        return {
            "key": self.key, "epoch": self.epoch, "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else {},
            "history": self.history, "best_loss": self.best_loss, "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs, "stopped": self.stopped, "rng": rng_state(self.gen),
        }

    def resume(self, st: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` state (see :meth:`state`)."""
        self.net.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        if self.scaler and st["scaler"]:
            self.scaler.load_state_dict(st["scaler"])
        self.history, self.epoch = list(st["history"]), int(st["epoch"])
        self.best_loss, self.best_epoch = float(st["best_loss"]), int(st["best_epoch"])
        self.bad_epochs, self.stopped = int(st["bad_epochs"]), bool(st["stopped"])
        set_rng_state(st["rng"], self.gen)
        if self.d.is_main:  # last.pt holds the history: an interrupted run's history.csv may have gone since (a rebuild)
            fileio.write_csv(self.model_dir / "history.csv", self.history, HISTORY_COLUMNS)

    def _save_best(self) -> None:
        with fileio.atomic_path(self.model_dir / "best.safetensors") as tmp:
            save_model(self.net, str(tmp))
        fileio.write_json(
            self.model_dir / "model.json",
            {**self.meta, "epoch": self.best_epoch, "best_monitored_loss": self.best_loss},
        )

    def _save_epoch(self) -> None:
        fileio.write_csv(self.model_dir / "history.csv", self.history, HISTORY_COLUMNS)
        with fileio.atomic_path(self.last_path) as tmp:
            torch.save(self.state(), tmp)

    # --------------------------------------------------------------------- the loop
    def train_epoch(self, train: ImageSet, weights: torch.Tensor | None, bar: Progress) -> tuple[float, float, float]:
        """One pass over ``train``; returns (mean loss, seconds, data-wait fraction)."""
        tc, d = self.cfg.train, self.d
        plan = epoch_plan(train.labels, tc.batch_size, self.gen, tc.imbalance == "balanced_sampler", tc.hflip, d.world)
        # On a GPU the uint8 cache (N x S x S, 250 MB for the study's 5,000 images at 224 px) lives on
        # the device, so a step needs no host-to-device copy; on CPU .to() is a no-op.
        images = self._device_images(train)
        one_cycle = tc.schedule == "onecycle"
        self.model.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=self.device)  # summed on the device: no sync per step
        total_n, wait = 0, 0.0
        start = time.perf_counter()
        for step, (idx, flip) in enumerate(plan):
            allocator.release_every(60.0)  # a long epoch's freed memory creeps up otherwise (medauc.allocator)
            t0 = time.perf_counter()
            local = ddp.local_slice(torch.arange(len(idx)), d)
            x = images[idx[local].to(images.device)]
            x = torch.where(flip[local, None, None].to(images.device), x.flip(-1), x)
            x = self.transform(x)
            if tc.affine > 0:
                # Drawn for the whole global batch from the trainer's generator (saved in last.pt),
                # so resuming and every process count see the same augmentation.
                x = random_affine(x, torch.rand(len(idx), 4, generator=self.gen)[local], tc.affine)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
            y_all = train.labels[idx]
            y = y_all[local].to(self.device, non_blocking=True)
            wait += time.perf_counter() - t0
            with self.autocast():
                logits = self.model(x)
            per_sample = F.cross_entropy(logits.float(), y, reduction="none", label_smoothing=tc.label_smoothing)
            # Sum over this rank's images / size of the global batch (x world: DDP averages the
            # gradients), so every process count gives the gradient of the global-batch mean.
            if weights is None:
                loss = per_sample.sum() * d.world / len(idx)
            else:
                w = weights.to(self.device)
                loss = (per_sample * w[y]).sum() * d.world / weights[y_all].sum().to(self.device)
            self.opt.zero_grad(set_to_none=True)
            if one_cycle:
                self._set_lr(self.epoch * len(plan) + step, tc.epochs * len(plan))
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                loss.backward()
                self.opt.step()
            total_loss += per_sample.detach().sum().double()
            total_n += len(y)
            bar.update(1)
            if step % 10 == 9 or step == len(plan) - 1:  # reading the loss waits for the GPU: not every step
                bar.set_postfix(loss=f"{float(total_loss) / max(total_n, 1):.4f}", refresh=False)
        seconds = time.perf_counter() - start
        if d.enabled:
            t = torch.stack([total_loss, torch.tensor(float(total_n), dtype=torch.float64, device=self.device)])
            torch.distributed.all_reduce(t)
            total_loss, total_n = t[0], int(t[1])
        return float(total_loss) / max(total_n, 1), seconds, wait / max(seconds, 1e-9)

    def _set_lr(self, step: int, total: int) -> float:
        """Put the one-cycle learning rate of ``step`` (0-based, of ``total``) in every parameter group."""
        lr = one_cycle_lr(step, total, self.cfg.train.lr, self.cfg.train.warmup)
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def _device_images(self, s: ImageSet) -> torch.Tensor:
        """``s.images`` on the training device, copied once per image set (a no-op on CPU)."""
        if self.device.type == "cpu":
            return s.images
        if self._on_device is None or self._on_device[0] is not s.images:
            self._on_device = (s.images, s.images.to(self.device))
        return self._on_device[1]

    def fit(self, train: ImageSet, monitor: ImageSet, monitor_split: str) -> None:
        """Train until ``train.epochs`` or early stopping; ``best.safetensors`` holds the lowest monitored loss."""
        tc, d = self.cfg.train, self.d
        if tc.monitor == "test" and d.is_main:
            log.warning(
                "%s seed %d: train.monitor=test: the TEST loss drives the LR schedule and early stopping "
                "(the study's protocol); test-set metrics of this model are optimistic (recorded as test_leak)",
                self.model_name, self.seed,
            )
        weights = class_weights(train.labels, len(self.classes)) if tc.imbalance == "weighted_loss" else None
        steps = len(epoch_plan(train.labels, tc.batch_size, torch.Generator().manual_seed(0), False, False, d.world))
        bar = progress_bar(
            total=tc.epochs * steps, initial=self.epoch * steps, desc=f"train {self.model_name} seed {self.seed}",
            unit="step", disable=not d.is_main, dynamic_ncols=True,
        )
        with bar:
            while self.epoch < tc.epochs and not self.stopped:
                # Under onecycle the rate changes every step; the history records the epoch's first.
                lr = self._set_lr(self.epoch * steps, tc.epochs * steps) if tc.schedule == "onecycle" else self.opt.param_groups[0]["lr"]
                train_loss, seconds, wait = self.train_epoch(train, weights, bar)
                t0 = time.perf_counter()
                ddp.sync_buffers(self.net, d)
                m = split_metrics(predict_logits(self.net, monitor.images, self.transform, 2 * tc.batch_size, d, self.autocast), monitor.labels)
                self.epoch += 1
                self.history.append({
                    "epoch": self.epoch, "train_loss": train_loss, "val_loss": m["loss"], "val_accuracy": m["accuracy"],
                    "val_macro_auc": m["macro_auc"], "lr": lr, "seconds": round(seconds + time.perf_counter() - t0, 3),
                    "images_per_s": round(len(train) / max(seconds, 1e-9), 2), "data_wait_fraction": round(wait, 4),
                    "monitored_split": monitor_split, "test_leak": tc.monitor == "test",
                })
                if m["loss"] < self.best_loss:
                    self.best_loss, self.best_epoch, self.bad_epochs = m["loss"], self.epoch, 0
                    if d.is_main:
                        self._save_best()
                else:
                    self.bad_epochs += 1
                if tc.schedule == "plateau":
                    self.sched.step(m["loss"])
                self.stopped = self.bad_epochs >= tc.early_stopping_patience
                bar.set_postfix(loss=f"{train_loss:.4f}", val_loss=f"{m['loss']:.4f}", val_auc=f"{m['macro_auc']:.4f}")
                if d.is_main:
                    self._save_epoch()
                ddp.barrier(d)
        if not (self.model_dir / "best.safetensors").is_file():
            raise ModelError(f"{self.model_name} seed {self.seed}: no epoch finished with a finite monitored loss; check train.lr and the data")

    def load_best(self) -> None:
        """Put the best checkpoint's weights in the model, from disk, so a resumed run predicts identically."""
        load_model(self.net, str(self.model_dir / "best.safetensors"), device=str(self.device))
