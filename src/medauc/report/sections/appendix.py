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
    times = ctx.json("timings.json") or {}
    timings, computed = times.get("last_run", {}), times.get("computed", {})
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
        doc.table(["stage", "seconds to compute", "seconds in the last run"],
                  [[k, fmt(computed[k], 1) if k in computed else "", fmt(v, 1)] for k, v in timings.items()],
                  "Time per stage: when it last did its work, and in the last `medauc run` (a stage found up to "
                  "date takes a fraction of a second; the phantom's copy from its cache counts as its work)")
        ctx.results["timings"] = timings
        ctx.results["timings_computed"] = computed
    stages_table(ctx)
    doc.p("The resolved configuration (config.yaml). To repeat this run: `medauc run --config PATH/TO/config.yaml`.")
    doc.code(dump_yaml(ctx.cfg))
    ctx.results["environment"] = env
