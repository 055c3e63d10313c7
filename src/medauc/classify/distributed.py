"""Data-parallel training across processes: ``torchrun --nproc_per_node=K -m medauc train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` starts the process
group (gloo on CPU, nccl on CUDA). Every rank draws the same seeded epoch plan (order and flips)
and trains on its own slice of each global batch, so the global batch, the learning rate and the
random stream are those of a single-process run; with ``train.sync_bn`` (the default) BatchNorm
layers normalise with the global batch's statistics (:func:`convert_sync_batchnorm`), as one process
does. Evaluation shards the images like
``DistributedSampler`` (padded with repeats to a multiple of K) and :func:`gather_rows` puts the
results back in order, without the padding, on every rank. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from medauc.device import resolve_device


@dataclass(frozen=True)
class Dist:
    """Where this process sits: rank among ``world`` processes, and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    group: bool = False  # in a process group (always when world > 1; with one process only on request)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1 or self.group


SINGLE_PROCESS_GROUP = "MEDAUC_DDP_SINGLE"


def setup(device_choice: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single process.

    With ``MEDAUC_DDP_SINGLE=1``, ``torchrun --nproc_per_node=1`` also starts a process group and
    wraps the model in DistributedDataParallel: the whole multi-process path (NCCL on a GPU) on a
    machine with one GPU, where two ranks cannot share the device.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_choice, local_rank)
    group = world > 1 or ("WORLD_SIZE" in os.environ and os.environ.get(SINGLE_PROCESS_GROUP) == "1")
    if group and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, device, group)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shard(n: int, d: Dist) -> torch.Tensor:
    """Indices of ``range(n)`` this rank evaluates: padded with repeats to a multiple of ``world``, every ``world``-th."""
    if not d.enabled:
        return torch.arange(n)
    total = -(-n // d.world) * d.world
    padded = torch.cat([torch.arange(n), torch.arange(total - n) % max(n, 1)])
    return padded[d.rank :: d.world]


def gather_rows(local: torch.Tensor, n: int, d: Dist) -> torch.Tensor:
    """Per-rank rows for :func:`shard` indices -> all ``n`` rows in order, padding removed, on every rank."""
    if not d.enabled:
        return local
    backend_device = d.device if d.device.type == "cuda" else torch.device("cpu")
    local = local.to(backend_device).contiguous()
    parts = [torch.empty_like(local) for _ in range(d.world)]
    dist.all_gather(parts, local)
    out = torch.empty((local.shape[0] * d.world, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    for r, part in enumerate(parts):
        out[r :: d.world] = part
    return out[:n].cpu()


def local_slice(batch: torch.Tensor, d: Dist) -> torch.Tensor:
    """This rank's contiguous part of a global batch (sizes differ by at most one)."""
    if not d.enabled:
        return batch
    return torch.tensor_split(batch, d.world)[d.rank]


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks, differentiable: the gradient of a sum every rank uses is the sum of their gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, by all-reduce over ranks.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors (its kernels, ``batch_norm_stats`` and friends,
    are GPU-only), so under gloo the per-channel count, sum and squared deviations are all-reduced
    instead (two passes, as a single process computes them); autograd carries the gradient through
    the all-reduce. In eval mode, or alone in its group, it is plain batch norm. Like timm's
    ``SyncBatchNormAct`` it applies the ``drop`` and ``act`` of a converted ``BatchNormAct2d``.
    Input (N, C, *), any N (0 on a rank whose share of the batch is empty); output of the same shape.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            x = self._global_batch_norm(input)
        else:
            x = super().forward(input)
        if hasattr(self, "drop"):
            x = self.drop(x)
        if hasattr(self, "act"):
            x = self.act(x)
        return x

    def _global_batch_norm(self, input: torch.Tensor) -> torch.Tensor:
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = (1, c) + (1,) * (input.dim() - 2)
        x = input.float()
        count = torch.tensor([float(x.numel() // max(c, 1))], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        n = float(count)
        if n < 2:
            raise ValueError(f"batch norm over {n:g} value(s) per channel in the global batch; use train.batch_size >= 2")
        mean = _AllReduceSum.apply(x.sum(dims)) / n
        centred = x - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / n  # biased, as in the forward pass
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean.dtype), alpha=f)
                unbiased = var.detach() * (n / (n - 1))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """Every BatchNorm layer of ``module`` normalised with global-batch statistics under data parallelism.

    On CUDA this is timm's ``convert_sync_batchnorm`` (``torch.nn.SyncBatchNorm``, and timm's
    ``BatchNormAct2d`` with its activation kept), as timm's ``train.py --sync-bn``; on CPU each
    layer becomes a :class:`GlooSyncBatchNorm` sharing its parameters and buffers. Returns the
    converted module (``module`` itself when it holds no BatchNorm).
    """
    if d.device.type == "cuda":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(module)
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():  # timm's BatchNormAct2d: its drop and act come along
        out.add_module(name, convert_sync_batchnorm(child, d))
    return out


def sync_buffers(module: torch.nn.Module, d: Dist) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics) before evaluating."""
    if d.enabled:
        for b in module.buffers():
            dist.broadcast(b.data, 0)


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
