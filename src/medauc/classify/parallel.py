"""Several trainings at once on a CPU (``train.jobs``): one process per training, few threads each.

The study's small networks at 64-96 px do not keep many cores busy: one training on two threads
runs a step barely faster than on one (measured on a 2-core machine, batch 32 at 64 px:
densenet121 0.79 s on two threads, 0.71 s on one; resnet18 0.41 and 0.47 s), while two one-thread
trainings side by side each keep their one-thread speed. ``train.jobs: 2`` there trains the four
models in about half the time of one after the other.

Each training runs in its own spawned process with ``threads`` intra-op threads and writes the same
files as :func:`medauc.classify.stage.train_stage` does in one process (its own folder, its own
stage record), so a result depends only on its inputs and its thread count, never on which
trainings ran beside it: ``jobs=2`` with one thread each equals ``jobs=1`` with
``train.num_threads=1`` bit for bit (tested). The longest trainings start first (longest processing
time first: with two cores and four trainings, the two that finish last then end close together).
How long a training takes is estimated before it starts (:func:`training_cost`): its epochs times the
seconds of one step of its network, timed here on a few images (:func:`probe_batch`), because a network's size says little
(densenet121 has fewer parameters than resnet18 and trains at 0.66 times its speed on a CPU at 64 px).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medauc import allocator
from medauc.classify import distributed as ddp
from medauc.config import Config, from_dict, to_dict
from medauc.data.datasets import ImageSet
from medauc.errors import ModelError
from medauc.processes import die_with_parent

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def plan(cfg: Config, n_tasks: int, device: torch.device, distributed: bool) -> tuple[int, int]:
    """(trainings at once, threads for each) for ``n_tasks`` trainings; (1, 0) = one at a time as usual.

    ``train.jobs`` > 1 applies on a CPU in one process; under torchrun or on a GPU the trainings run
    one after the other. Threads: ``train.num_threads`` when set, else the cores shared out.
    Example: ``plan(cfg, 4, torch.device("cpu"), False)`` -> ``(2, 1)`` with jobs 2 on 2 cores.
    """
    jobs = min(cfg.train.jobs, n_tasks)
    if jobs <= 1:
        return 1, 0
    if distributed or device.type != "cpu":
        log.info("train.jobs=%d applies to CPU training in one process; on %s the models train one after the other",
                 cfg.train.jobs, "torchrun" if distributed else device.type)
        return 1, 0
    threads = cfg.train.num_threads or max(1, cpu_cores() // jobs)
    return jobs, threads


def order(costs: list[float]) -> list[int]:
    """Indexes of the trainings, the costliest first (stable): the long trainings start first."""
    return sorted(range(len(costs)), key=lambda i: -costs[i])


def probe_batch(image_size: int) -> int:
    """How many images the step timing passes: as many as 16 at 64 px hold pixels, 2 to 16 (2 at 224 px)."""
    return max(2, min(16, round(16 * 64 * 64 / image_size**2)))


def step_seconds(cfg: Config, models: list[str], num_classes: int, threads: int, batch: int = 0, rounds: int = 2) -> dict[str, float]:
    """Seconds of one forward and backward pass of each network on ``batch`` images at the training size.

    Timed in this process on ``threads`` threads, in ``rounds`` rounds that take each network in turn
    (the first round, which allocates and picks kernels, is not counted): a network's time is its
    fastest pass. On a shared 2-core machine, one pass each on 8 images varied by up to 1.8x (the
    first network of a process the slowest) and ranked resnet18 above densenet121 half the time; the
    fastest of two rounds on 16 images ranked the demo's four as their trainings take, every time
    (densenet121 0.54-0.59 s, resnet18 0.40-0.41, tf_efficientnetv2_b0 0.26-0.29, efficientformerv2_s0
    0.22-0.23; 5-8 s for the four). A network that cannot be built or run gets ``inf``: its training
    starts first and reports the error itself.
    Random weights and inputs, under a forked random state: nothing a training draws is changed.

    ``batch`` 0: :func:`probe_batch` images (16 at 64 px, 2 at 224 px), and a network
    whose pass takes over a second is timed once: at the study's size (its four models at 224 px, one
    thread) 16 images and every round took 148 s and 5.0 GB; a costly network's pass varies little
    against its length. Gradients are dropped after each pass and the freed memory given back.
    """
    from medauc.classify.models import create_model

    size, chans, before = cfg.data.image_size, cfg.model.in_chans, torch.get_num_threads()
    batch = batch or probe_batch(size)
    best = {m: float("inf") for m in models}
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            x = torch.rand(batch, chans, size, size)
            nets = {}
            for m in models:
                try:
                    nets[m] = create_model(m, num_classes, chans, size)
                except Exception:  # noqa: BLE001 - only an estimate (see above)
                    continue
                if cfg.train.channels_last:
                    nets[m].to(memory_format=torch.channels_last)
            if cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            for r in range(1 + rounds):
                for m, net in list(nets.items()):
                    start = time.perf_counter()
                    try:
                        net(x).float().logsumexp(1).mean().backward()
                    except Exception:  # noqa: BLE001 - only an estimate (see above)
                        del nets[m]
                        best[m] = float("inf")
                        continue
                    net.zero_grad(set_to_none=True)
                    if r:
                        best[m] = min(best[m], time.perf_counter() - start)
                        if best[m] > 1.0:
                            del nets[m]  # long enough to be timed once
    finally:
        torch.set_num_threads(before)
        allocator.release()
    return best


def training_cost(cfg: Config, tasks: list[tuple[str, int]], epochs: list[int], num_classes: int, threads: int) -> list[float]:
    """Each training's estimated length: its ``epochs`` x one step of its network (:func:`step_seconds`).

    Only the order of the trainings depends on it, never a result. Each network is timed once (its
    seeds share the estimate); one whose trainings all have 0 ``epochs`` (finished) is not timed.
    """
    models = list(dict.fromkeys(m for (m, _), e in zip(tasks, epochs) if e))
    per_step = step_seconds(cfg, models, num_classes, threads) if models else {}
    if per_step:
        log.info("seconds per forward and backward pass on %d images, %d thread(s) (the costliest trainings start first): %s",
                 probe_batch(cfg.data.image_size), threads, ", ".join(f"{m} {s:.3f}" for m, s in per_step.items()))
    return [e * per_step[m] if e else 0.0 for (m, _), e in zip(tasks, epochs)]


def _init(parent_pid: int, threads: int, level: int) -> None:
    # Killed with its parent: an orphan would keep training and write into a run folder another process holds.
    die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _run(train_one: Callable[..., dict[str, Any]], cfg_dict: dict[str, Any], *args: Any) -> dict[str, Any]:
    *before, force = args  # train_one's arguments, less the config (sent as a dict) and the process's Dist
    return train_one(from_dict(cfg_dict), *before, ddp.Dist(), force)


def train_parallel(
    train_one: Callable[..., dict[str, Any]], cfg: Config, out_dir: Path, tasks: list[tuple[str, int]], costs: list[float],
    classes: list[str], train: ImageSet, sets: dict[str, ImageSet], monitor_split: str, manifest_sha: str, force: bool,
    jobs: int, threads: int,
) -> list[dict[str, Any]]:
    """Train ``tasks`` (model, seed), ``jobs`` at a time with ``threads`` threads each; results in ``tasks`` order.

    ``costs``: each task's estimated length (:func:`training_cost`; the costliest start first).

    ``train_one``: :func:`medauc.classify.stage.train_one` (passed by reference to each process).

    The first failure stops the others (their ``last.pt`` lets a rerun resume them) and is raised
    here, naming the model.
    """
    log.info("training %d models, %d at a time on %d thread(s) each (train.jobs=%d)", len(tasks), jobs, threads, cfg.train.jobs)
    cfg_dict = to_dict(cfg)
    ctx = multiprocessing.get_context("spawn")
    results: list[dict[str, Any] | None] = [None] * len(tasks)
    pool = ctx.Pool(jobs, initializer=_init, initargs=(os.getpid(), threads, logging.getLogger("medauc").getEffectiveLevel()))
    try:
        pending = {
            i: pool.apply_async(_run, (train_one, cfg_dict, out_dir, *tasks[i], classes, train, sets, monitor_split,
                                       manifest_sha, force))
            for i in order(costs)
        }
        while pending:  # the first failure, whichever training it is in, stops the run at once
            for i in [i for i, res in pending.items() if res.ready()]:
                try:
                    results[i] = pending.pop(i).get()
                except Exception as exc:
                    model, seed = tasks[i]
                    raise ModelError(f"training {model} seed {seed} (in a train.jobs worker) failed: {exc}") from exc
            if pending:
                next(iter(pending.values())).wait(0.2)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    return [r for r in results if r is not None]
