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
