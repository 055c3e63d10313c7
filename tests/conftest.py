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


@pytest.fixture(autouse=True, scope="session")
def _comparisons_never_say_no_above_detectable(tmp_path_factory):
    # Every comparisons file this test session writes (comparisons.csv, strategies.json's paired tests):
    # no "not significant" beside a difference larger than its own detectable difference, and no
    # "no" without one (a zero standard error is "not assessable"). Fails the session's last test.
    yield
    from invariants import check_folder

    bad = check_folder(tmp_path_factory.getbasetemp())
    assert not bad, "comparisons that say 'no' above their detectable difference:\n" + "\n".join(bad[:20])
