"""The report's last sections: the definition of every metric, and how to reproduce the run
(environment, time per stage, the stages and their records, the resolved configuration)."""

from __future__ import annotations

from medauc.config import dump_yaml
from medauc.formatting import fmt
from medauc.report.context import Context
from medauc.report.provenance import stages_table


def definitions_section(ctx: Context) -> None:
    metrics = ctx.json("metrics.json")
    if not metrics:
        return
    ctx.doc.h("Definitions")
    ctx.doc.table(["metric", "definition"], [[k, v] for k, v in metrics.get("definitions", {}).items()],
                  "Every metric in this report")


def environment_section(ctx: Context) -> None:
    doc = ctx.doc
    doc.h("Reproducing this run")
    env = ctx.json("environment.json") or {}
    timings = (ctx.json("timings.json") or {}).get("last_run", {})
    if env:
        pk = env.get("packages", {})
        doc.table(
            ["item", "value"],
            [["python", env.get("python")], ["platform", env.get("platform")], ["device", env.get("device")],
             ["CPU cores", env.get("cpu_count")], ["git commit", env.get("git_commit")]]
            + [[k, v] for k, v in pk.items()],
            "Environment",
        )
    if timings:
        doc.table(["stage", "seconds"], [[k, fmt(v, 1)] for k, v in timings.items()], "Time per stage (last run)")
        ctx.results["timings"] = timings
    stages_table(ctx)
    doc.p("The resolved configuration (config.yaml). To repeat this run: `medauc run --config PATH/TO/config.yaml`.")
    doc.code(dump_yaml(ctx.cfg))
    ctx.results["environment"] = env
