"""Shared fixtures. Tests run on generated data and tiny models only; nothing is downloaded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    # Tests run two at a time (pytest -n 2) on two cores: one torch thread each.
    import torch

    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _release_run_folders():
    # A test that opened a run folder in this process must not leave it locked for the next one.
    yield
    from medauc.lock import release_all

    release_all()
