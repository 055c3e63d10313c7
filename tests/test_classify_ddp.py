"""Data-parallel training on 2 CPU processes (gloo): gathered predictions match one process.

The fast test forks two ranks that call ``train_stage`` with torchrun's environment variables;
the torchrun + CLI variant (about a minute here, mostly imports) runs with MEDAUC_SLOW_TESTS=1.
Both train a LayerNorm model (test_vit) and a BatchNorm one (test_resnet): with train.sync_bn the
BatchNorm statistics are the global batch's, as in one process (without it, test_resnet's
probabilities differ by 1.5e-3 here, against 2e-8 with it).
"""

from __future__ import annotations

import copy
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
from medauc.classify.stage import train_stage
from medauc.config import load_config
from test_classify_models import make_dataset

MODELS = ["test_vit", "test_resnet"]
# train.eps=0.01: with Adam's default 1e-8 its first steps move every weight by about lr whatever the
# size of its gradient, so rounding-level differences between 1 and 2 processes (convolutions on 4
# images instead of 8) flip weights whose gradient is ~0 and reach 1e-4 in the probabilities;
# a larger eps leaves the comparison to what it tests, the batch statistics.
OVERRIDES = [f"model.names=[{','.join(MODELS)}]", "train.epochs=2", "train.batch_size=8", "train.device=cpu", "train.eps=0.01"]
# One thread per rank: 2 ranks on 2 cores, and a forked child that used the parent's intra-op
# thread pool can hang in it (channels-last conversion of test_resnet did).
RANK_OVERRIDES = [*OVERRIDES, "train.num_threads=1"]


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
        train_stage(load_config("smoke", RANK_OVERRIDES), out, manifest)
    except BaseException as exc:  # report any failure through the exit code, then leave at once
        print(f"rank {rank}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)


def check_same(ddp: Path, one: Path, manifest: Path) -> None:
    test_ids = pd.read_csv(manifest).query("split == 'test'")["image_id"]
    for model in MODELS:
        a = pd.read_csv(ddp / f"predictions/{model}/0/test.csv")
        b = pd.read_csv(one / f"predictions/{model}/0/test.csv")
        assert sorted(a["image_id"]) == sorted(test_ids) and a["image_id"].is_unique  # every test image exactly once
        assert list(a["image_id"]) == list(b["image_id"])
        np.testing.assert_allclose(a.filter(like="prob_").to_numpy(), b.filter(like="prob_").to_numpy(), atol=1e-6, err_msg=model)
        ha = pd.read_csv(ddp / f"train/{model}/0/history.csv")
        hb = pd.read_csv(one / f"train/{model}/0/history.csv")
        np.testing.assert_allclose(ha[["train_loss", "val_loss"]], hb[["train_loss", "val_loss"]], rtol=1e-5, err_msg=model)


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


def test_converted_batchnorm_alone_is_plain_batchnorm() -> None:
    """Outside a process group the converted layers compute what timm's BatchNormAct2d does, activation
    included (a conversion that dropped the act, as torch's own convert_sync_batchnorm does, fails here)."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=4, in_chans=1)
    converted = ddp.convert_sync_batchnorm(copy.deepcopy(model), ddp.Dist())
    assert not any(type(m) is torch.nn.BatchNorm2d or type(m).__name__ == "BatchNormAct2d" for m in converted.modules())
    assert any(isinstance(m, ddp.GlooSyncBatchNorm) for m in converted.modules())
    x = torch.randn(6, 1, 32, 32)
    for mode in (True, False):
        model.train(mode), converted.train(mode)
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(converted.state_dict(), model.state_dict(), rtol=0, atol=0)  # running stats updated alike


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MEDAUC_SLOW_TESTS"), reason="set MEDAUC_SLOW_TESTS=1 (about a minute)")
def test_torchrun_cli(data: tuple[Path, Path]) -> None:
    root, manifest = data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "medauc",
           "train", "--config", "smoke", "--out", str(root / "torchrun"), "--manifest", str(manifest), *OVERRIDES]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    check_same(root / "torchrun", root / "one", manifest)
