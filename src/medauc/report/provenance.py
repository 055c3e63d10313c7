"""Where the report's inputs come from: the stages as the registry declares them, with their records,
and the five image checks gathered from the two stages that compute them."""

from __future__ import annotations

from typing import Any

from medauc import records, stages


def image_checks(ctx: Any) -> dict[str, Any]:
    """Checks a-e: ``augment_checks.json`` (b, c, d) with a and e from ``strategies.json``'s ``checks``.

    Run folders made before the strategies stage had its own file hold all five in
    ``augment_checks.json``; they read as before. ``ctx``: a :class:`medauc.report.context.Context`.
    """
    checks = dict(ctx.json("augment_checks.json") or {})
    strategies = ctx.json("strategies.json") or {}
    if "checks" in strategies:
        checks.update(strategies["checks"])
    return checks


def stages_table(ctx: Any) -> None:
    """A table of the configured stages: what each one's cache key is made of, what it writes, its record."""
    rows, out = [], []
    for stage in stages.pipeline(ctx.cfg):
        declared = stages.describe(stage)
        rec = records.stage_record(ctx.run_dir, stage.name) if stage.recorded else None
        if stage.name == "report":
            state = "this report"
        elif not stage.recorded:
            state = "no record (cached by its settings)"
        elif rec is None:
            state = "not run in this folder"
        else:
            state = f"key {rec.get('key')}, {len(rec.get('files') or {})} files with their sha256"
        rows.append([stage.name, declared["key"], declared["outputs"], state])
        out.append({"stage": stage.name, **declared, "record": state})
    ctx.doc.table(["stage", "cache key made of", "files written", "record (.medauc/stages/)"], rows,
                  "Stages, in order (medauc.stages): a rerun skips a stage whose key is unchanged and whose files are intact")
    ctx.results["stages"] = out
