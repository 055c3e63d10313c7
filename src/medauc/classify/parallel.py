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
``train.num_threads=1`` bit for bit (tested). The longest trainings (most epochs) start first.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

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


def order(epochs: list[int]) -> list[int]:
    """Indexes of the trainings, most ``epochs`` first (stable): the long trainings start first."""
    return sorted(range(len(epochs)), key=lambda i: -epochs[i])


def _init(parent_pid: int, threads: int, level: int) -> None:
    # Killed with its parent: an orphan would keep training and write into a run folder another process holds.
    die_with_parent(parent_pid)
    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _run(train_one: Callable[..., dict[str, Any]], cfg_dict: dict[str, Any], *args: Any) -> dict[str, Any]:
    *before, force = args  # train_one's arguments, less the config (sent as a dict) and the process's Dist
    return train_one(from_dict(cfg_dict), *before, ddp.Dist(), force)


def train_parallel(
    train_one: Callable[..., dict[str, Any]], cfg: Config, out_dir: Path, tasks: list[tuple[str, int]], epochs: list[int],
    classes: list[str], train: ImageSet, sets: dict[str, ImageSet], monitor_split: str, manifest_sha: str, force: bool,
    jobs: int, threads: int,
) -> list[dict[str, Any]]:
    """Train ``tasks`` (model, seed), ``jobs`` at a time with ``threads`` threads each; results in ``tasks`` order.

    ``epochs``: each task's epoch count (the most start first).

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
            for i in order(epochs)
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
