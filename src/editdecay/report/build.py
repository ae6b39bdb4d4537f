"""Build the report: read runs (``tracking.read``), run every registered table, comparison and
plot, write the output directory whole (via a temporary directory), log it to the sweep's parent run."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from editdecay import __version__
from editdecay.io import atomic_directory
from editdecay.report import comparisons as _comparisons  # noqa: F401  (registers the comparisons)
from editdecay.report import plots as _plots
from editdecay.report import tables as _tables  # noqa: F401  (registers the tables)
from editdecay.report.data import ROW_KEYS, SETTING_KEYS, ReportData, build_data, dropped_warning
from editdecay.report.findings import design_warning
from editdecay.report.findings import findings as make_findings
from editdecay.report.html import render
from editdecay.report.registry import PLOTS, TABLES
from editdecay.report.stats import (BOOTSTRAP_NOTE, DS_NOTE, POWER_NOTE, RATE_NOTE, RUN_LEVEL_NOTE, WITHIN_NOTE,
                                    TOST_NOTE)
from editdecay.tracking.read import SweepRuns

FILES = ("tables.md", "tables.csv", "comparisons.csv", "summary.json", "findings.md", "report.html")


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    n_runs: int
    n_usable: int
    missing: list[dict]
    logged_to: str | None
    seconds: float
    warnings: list[str]  # one line each: duplicate runs dropped, too few seeds for claims about methods


def _missing(data: ReportData, runs: SweepRuns) -> list[dict]:
    out = [{"trial_id": r.trial_id, "status": r.status, "run_id": r.run_id, "reason": r.problem}
           for r in data.run_table.itertuples() if r.problem]
    # A failed attempt of a trial that later finished is not missing.
    done = set(data.usable["trial_id"])
    out = [m for m in out if m["trial_id"] not in done]
    return out + [{**m, "run_id": "", "reason": "no run"} for m in runs.missing]


def _markdown(tables, header: str) -> str:
    parts = [header]
    for t in tables:
        parts += [f"## {t.title}", "", f"_{t.note}_", "", markdown_table(t.wide) if not t.wide.empty else "(no data)", ""]
    return "\n".join(parts)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-style pipe table (pandas' to_markdown needs tabulate, which we do not depend on)."""
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(cell, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def check_margin(margin: float | None) -> float | None:
    """The equivalence margin (a difference in rate, 0 < margin < 1), or None."""
    from editdecay.tracking.read import ReportInputError

    if margin is None:
        return None
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and 0 < margin < 1):
        raise ReportInputError(f"--margin must be a difference in rate between 0 and 1 (exclusive), e.g. 0.05; got {margin}")
    return float(margin)


def write_report(runs: SweepRuns, out_dir: str | Path, *, log_to_parent: bool = True,
                 margin: float | None = None) -> ReportResult:
    start = time.perf_counter()
    margin = check_margin(margin)
    data = build_data(runs)
    missing = _missing(data, runs)
    comparisons = _comparisons.run_comparisons(data, margin)
    data.comparisons = comparisons
    tables = [t for fn in TABLES.values() for t in fn(data)]
    varying = data.varying(SETTING_KEYS)
    found = make_findings(comparisons, varying, margin)
    usable = data.usable
    seeds = sorted(usable["seed"].unique().tolist(), key=str) if not usable.empty else []
    n_tested = int(comparisons["p_value"].notna().sum())
    warnings = [w for w in (dropped_warning(data.dropped or []), design_warning(len(seeds), n_tested)) if w]
    meta = {"source": runs.description, "experiment": runs.experiment, "tracking URI": _without_password(runs.tracking_uri),
            "parent run": runs.parent_run_id or "-", "runs read": len(runs.trials), "runs used": len(usable),
            "seeds": ", ".join(map(str, seeds)) or "-", "equivalence margin": f"±{margin:g}" if margin else "none",
            "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "editdecay": __version__}
    notes = [RUN_LEVEL_NOTE + ".", WITHIN_NOTE + ".", POWER_NOTE + ".", TOST_NOTE + ".", RATE_NOTE + ".",
             "ES/PS/NS cells: " + BOOTSTRAP_NOTE + ".", DS_NOTE + ".",
             "Success rule: an edit counts as successful when its ES is 1 (the trial's rule); EFR's denominator is the "
             "edits successful after editing.",
             "One run per trial × seed: the latest finished run of the same settings and seed; duplicates are dropped "
             "with a warning.",
             "Decay curves track the first tracking.curve_edits edits of each trial; their band is a Student-t 95% "
             "interval across seeds."]
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as tmp:
        long = pd.concat([t.long for t in tables], ignore_index=True) if tables else pd.DataFrame()
        long.to_csv(tmp / "tables.csv", index=False)
        header = (f"# editdecay report: {runs.description}\n\nExperiment `{runs.experiment}`, {len(usable)} of "
                  f"{len(runs.trials)} runs used, seeds {meta['seeds']}. Cells: mean [95% CI] (n = seeds × edits).\n"
                  + "".join(f"\n> **{w}**\n" for w in warnings))
        (tmp / "tables.md").write_text(_markdown(tables, header), encoding="utf-8")
        comparisons.to_csv(tmp / "comparisons.csv", index=False)
        (tmp / "findings.md").write_text("# Findings\n\n" + "".join(f"> **{w}**\n\n" for w in warnings)
                                         + ("\n".join(f"- {f['text']}" for f in found) or "(none)") + "\n",
                                         encoding="utf-8")
        plots: dict[str, Path] = {}
        for name, fn in PLOTS.items():
            fig = fn(data)
            if fig is not None:
                plots[name] = tmp / f"{name}.png"
                _plots.save(fig, plots[name])
        summary = {"source": runs.description, "sweep_id": runs.sweep_id, "experiment": runs.experiment,
                   "tracking_uri": _without_password(runs.tracking_uri), "parent_run_id": runs.parent_run_id,
                   "n_runs": len(runs.trials), "n_used": len(usable), "expected_trials": runs.expected_trials,
                   "seeds": seeds, "missing": missing, "row_keys": ROW_KEYS, "notes": notes,
                   "warnings": warnings, "dropped": data.dropped or [], "margin": margin,
                   "findings": found, "plots": sorted(p.name for p in plots.values()),
                   "comparisons": json.loads(comparisons.to_json(orient="records")),
                   "tables": {t.name: json.loads(t.long.to_json(orient="records")) for t in tables}}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default) + "\n", encoding="utf-8")
        (tmp / "report.html").write_text(render(meta, tables, comparisons, found, plots, missing, notes, warnings), encoding="utf-8")
    logged = None
    if log_to_parent:  # --sweep: its parent run; --experiment: a report run of its own (tracking.runs.log_report)
        from editdecay.tracking.runs import log_report

        logged = ", ".join(log_report(runs.tracking_uri, out_dir, experiment=runs.experiment, source=runs.description,
                                      sweep_id=runs.sweep_id, parent_run_id=runs.parent_run_id,
                                      by_sweep=runs.description.startswith("sweep "))) or None
    return ReportResult(out_dir, out_dir / "report.html", len(runs.trials), len(usable), missing, logged,
                        time.perf_counter() - start, warnings)


def _without_password(uri: str) -> str:
    """The report is shared and logged as an artifact: a password in the URI must not travel with it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)
