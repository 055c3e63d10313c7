"""Progress bars off a terminal: a start and an end line, no carriage-return spam."""

from __future__ import annotations

import io
import logging

from medauc import progress as progress_mod
from medauc.progress import progress_bar


def test_not_a_terminal_gives_two_plain_lines(monkeypatch, caplog):
    err = io.StringIO()  # not a tty, like CI or `2> log`
    monkeypatch.setattr(progress_mod.sys, "stderr", err)
    with caplog.at_level(logging.INFO, logger="medauc.progress"):
        assert sum(progress_bar(range(500), desc="phantom", unit="img", mininterval=0)) == sum(range(500))
        with progress_bar(total=50, desc="train", unit="step") as bar:
            for _ in range(50):
                bar.update(1)
                bar.set_postfix(loss="0.1")
    assert err.getvalue() == ""  # tqdm itself wrote nothing
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "phantom: 500 img ..." and lines[1].startswith("phantom: done in")
    assert lines[2] == "train: 50 step ..." and lines[3].startswith("train: done in") and len(lines) == 4


def test_a_terminal_gets_the_bar_and_disable_still_wins(monkeypatch, caplog):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr(progress_mod.sys, "stderr", err)
    with caplog.at_level(logging.INFO, logger="medauc.progress"):
        list(progress_bar(range(3), desc="bar", file=err))
        list(progress_bar(range(3), desc="quiet", disable=True))
    assert "bar: 100%" in err.getvalue() and not caplog.records


def test_long_work_off_a_terminal_gets_a_line_at_least_every_interval(monkeypatch, caplog):
    """A 5-hour epoch must not be silent in a log: with the interval at 0 s every step gets a line
    with its count, share, rate and time left (the real interval is 30 s)."""
    monkeypatch.setattr(progress_mod.sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_mod, "INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="medauc.progress"):
        with progress_bar(total=4, desc="train m seed 0", unit="step", initial=1) as bar:
            for _ in range(3):
                bar.update(1)
        list(progress_bar(range(2), desc="generate", unit="batch"))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "train m seed 0: 4 step ..."
    assert lines[1].startswith("train m seed 0: 2/4 step (50%), ") and "step/s, about" in lines[1] and lines[1].endswith("left")
    assert lines[3].startswith("train m seed 0: 4/4 step (100%)") and lines[4].startswith("train m seed 0: done in")
    assert lines[6].startswith("generate: 1/2 batch (50%)") and lines[7].startswith("generate: 2/2 batch (100%)")
    monkeypatch.setattr(progress_mod, "INTERVAL_S", 3600.0)  # short work at the real interval: start and end only
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="medauc.progress"):
        list(progress_bar(range(50), desc="quick", unit="img"))
    assert len(caplog.records) == 2


def test_prediction_of_a_set_is_never_silent_and_its_logits_do_not_change(monkeypatch, caplog):
    # At the study's size one predicted set is tens of thousands of images: minutes without a line before.
    import torch

    from medauc.classify.predict import predict_logits

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3]

    def transform(x: torch.Tensor) -> torch.Tensor:
        return x.float()[:, None] / 255

    images = torch.arange(10 * 4 * 4, dtype=torch.uint8).reshape(10, 4, 4)
    monkeypatch.setattr(progress_mod.sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_mod, "INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="medauc.progress"):
        quiet = predict_logits(Net(), images, transform, 4)
        assert not caplog.records  # no desc: no lines (the per-epoch validation pass)
        shown = predict_logits(Net(), images, transform, 4, desc="predict test (m seed 0)")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "predict test (m seed 0): 3 batch ..." and lines[-1].startswith("predict test (m seed 0): done in")
    assert any(line.startswith("predict test (m seed 0): 2/3 batch") for line in lines)
    assert torch.equal(quiet, shown) and torch.equal(shown, images.float().flatten(1)[:, :3] / 255)
