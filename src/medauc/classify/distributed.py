"""Data-parallel training across processes: ``torchrun --nproc_per_node=K -m medauc train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` starts the process
group (gloo on CPU, nccl on CUDA). Every rank draws the same seeded epoch plan (order and flips)
and trains on its own slice of each global batch, so the global batch, the learning rate and the
random stream are those of a single-process run. Evaluation shards the images like
``DistributedSampler`` (padded with repeats to a multiple of K) and :func:`gather_rows` puts the
results back in order, without the padding, on every rank. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    """``train.device`` ("auto", "cpu", "cuda") -> a torch device (auto = CUDA when available)."""
    from medauc.errors import ModelError

    if choice not in ("auto", "cpu", "cuda"):
        raise ModelError(f"train.device={choice!r}: use auto, cpu or cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ModelError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


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


def sync_buffers(module: torch.nn.Module, d: Dist) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics) before evaluating."""
    if d.enabled:
        for b in module.buffers():
            dist.broadcast(b.data, 0)


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
