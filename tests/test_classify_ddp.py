"""Data-parallel training on 2 CPU processes (gloo): gathered predictions match one process.

The fast test forks two ranks that call ``train_stage`` with torchrun's environment variables;
the torchrun + CLI variant (about a minute here, mostly imports) runs with MEDAUC_SLOW_TESTS=1.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch.distributed as dist

from medauc.classify import distributed as ddp
from medauc.classify.train import train_stage
from medauc.config import load_config
from test_classify_models import make_dataset

OVERRIDES = ["model.names=[test_vit]", "train.epochs=2", "train.batch_size=8", "train.device=cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, out: str, manifest: str, world: int = 2) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        if world == 1:
            os.environ["MEDAUC_DDP_SINGLE"] = "1"
            d = ddp.setup("cpu")  # train_stage then finds the group started
            assert d.enabled and dist.is_initialized() and dist.get_world_size() == 1, "no process group"
        train_stage(load_config("smoke", OVERRIDES), out, manifest)
    except BaseException as exc:  # report any failure through the exit code, then leave at once
        print(f"rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)


def check_same(ddp: Path, one: Path, manifest: Path) -> None:
    test_ids = pd.read_csv(manifest).query("split == 'test'")["image_id"]
    a = pd.read_csv(ddp / "predictions/test_vit/0/test.csv")
    b = pd.read_csv(one / "predictions/test_vit/0/test.csv")
    assert sorted(a["image_id"]) == sorted(test_ids) and a["image_id"].is_unique  # every test image exactly once
    assert list(a["image_id"]) == list(b["image_id"])
    np.testing.assert_allclose(a.filter(like="prob_").to_numpy(), b.filter(like="prob_").to_numpy(), atol=1e-4)
    ha = pd.read_csv(ddp / "train/test_vit/0/history.csv")
    hb = pd.read_csv(one / "train/test_vit/0/history.csv")
    np.testing.assert_allclose(ha[["train_loss", "val_loss"]], hb[["train_loss", "val_loss"]], rtol=1e-4)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    # 7 test images per class: 28 rows, not a multiple of the 2 ranks, so shards are padded.
    root = tmp_path_factory.mktemp("ddp")
    manifest = make_dataset(root, {"train": 6, "val": 3, "test": 7}, size=32)
    train_stage(load_config("smoke", OVERRIDES), root / "one", manifest)
    return root, manifest


@pytest.mark.parametrize("world", [2, 1])
def test_ranks_in_a_process_group_match_one_process(data: tuple[Path, Path], world: int) -> None:
    """2 ranks; and 1 rank in a process group (MEDAUC_DDP_SINGLE=1), the path a one-GPU machine checks NCCL with."""
    root, manifest = data
    port = _free_port()
    out = root / f"ddp{world}"
    ctx = mp.get_context("fork")  # the children reuse this process's imports (seconds, not a minute)
    procs = [ctx.Process(target=_rank, args=(r, port, str(out), str(manifest), world)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():  # a hung rank must not outlive the test
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0] * world
    check_same(out, root / "one", manifest)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MEDAUC_SLOW_TESTS"), reason="set MEDAUC_SLOW_TESTS=1 (about a minute)")
def test_torchrun_cli(data: tuple[Path, Path]) -> None:
    root, manifest = data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medauc",
           "train", "--config", "smoke", "--out", str(root / "torchrun"), "--manifest", str(manifest), *OVERRIDES]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    check_same(root / "torchrun", root / "one", manifest)
