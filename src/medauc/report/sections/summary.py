"""The report's opening section: the study's four answers, computed by :mod:`medauc.answers` and printed here."""

from __future__ import annotations

import pandas as pd

from medauc.answers import study_answers
from medauc.report.context import Context
from medauc.report.provenance import image_checks


def summary_section(ctx: Context) -> None:
    """The study's four questions and the fifth (another hospital), answered in sentences filled from the run's files."""
    doc = ctx.doc
    doc.h("The study's questions, answered from this run")
    if ctx.cfg.data.source == "phantom":
        doc.p("These answers are about the built-in synthetic phantom with models trained from scratch at demo size: "
              "they show the method, not facts about real MRI. Run `medauc run --config study data.path=PATH` for the real data.", "note")
    comp_path = ctx.path("comparisons.csv")
    found = study_answers(
        ctx.json("metrics.json"), pd.read_csv(comp_path) if comp_path.exists() else None, ctx.json("strategies.json"),
        image_checks(ctx), ctx.json("explain.json"), ctx.cfg.evaluate.primary_metric, ctx.cfg.evaluate.level,
        ctx.json("external.json") if ctx.cfg.evaluate.external else None,
    )
    answers = {key: a["text"] for key, a in found.items()}
    for text in answers.values():
        doc.p(text, "answer")
    if answers and "q5_external" not in answers:
        doc.p("5. Does the winner hold at another hospital? Not asked: no external test set is configured "
              "(evaluate.external); see the external test sets section.", "note")
    if not answers:
        doc.p("No stage results yet.", "note")
    ctx.results["answers"] = answers
    ctx.results["answer_data"] = {key: {k: v for k, v in a.items() if k != "text"} for key, a in found.items()}
