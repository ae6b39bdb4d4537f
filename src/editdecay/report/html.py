"""report.html: one self-contained page (styles inline, PNGs base64-embedded, no network)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from editdecay.report.registry import Table

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0 1.2em} th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0} tr:nth-child(even) td{background:#fafafa} .note{color:#555;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em 1em} img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
li{margin:.3em 0} .sig{font-weight:600} code{background:#f4f4f4;padding:0 .2em}
"""


def _table(frame: pd.DataFrame) -> str:
    return "<div style='overflow-x:auto'>" + frame.to_html(index=False, border=0, na_rep="–", escape=True) + "</div>"


# The comparisons table as shown: the deciding (run-level) numbers first, the within-run test after.
SHOWN_COLUMNS = {"comparison": "comparison", "a": "A", "b": "B", "model": "model", "editor": "editor",
                 "dataset": "dataset", "n_edits": "#edits", "ft": "ft", "layers": "layers", "n_label": "n",
                 "rate_a": "rate A", "rate_b": "rate B", "effect": "A − B (run level)", "ci_low": "CI low",
                 "ci_high": "CI high", "p_value": "p", "p_holm": "p Holm", "agree": "seeds agree", "i2": "I²",
                 "tau2": "τ²", "q_p": "Q p", "mdd": "mdd (80%)", "p_equiv": "p equiv (TOST)",
                 "p_within": "p within these runs", "p_within_holm": "p within, Holm", "a_only": "a_only",
                 "b_only": "b_only", "note": "note"}


def render(meta: dict, tables: list[Table], comparisons: pd.DataFrame, findings: list[dict],
           plots: dict[str, Path], missing: list[dict], notes: list[str], warnings: list[str] = ()) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>editdecay report: {e(meta['source'])}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>editdecay report: {e(meta['source'])}</h1>",
             "<p class='note'>" + " · ".join(f"{e(k)}: <code>{e(str(v))}</code>" for k, v in meta.items()
                                             if k != "source") + "</p>"]
    for w in warnings:
        parts.append(f"<div class='warn'><b>{e(w)}</b></div>")
    if missing:
        parts.append(f"<div class='warn'><b>{len(missing)} trial(s) missing from the statistics</b><ul>"
                     + "".join(f"<li>{e(m['trial_id'])}: {e(m['status'])}{(' – ' + e(m['reason'])) if m.get('reason') else ''}</li>"
                               for m in missing) + "</ul></div>")
    parts.append("<h2>Findings</h2>")
    if findings:
        parts.append("<ul>" + "".join(f"<li class='{'sig' if f['significant'] else ''}'>{e(f['text'])}</li>"
                                      for f in findings) + "</ul>")
    else:
        parts.append("<p>No paired comparison had data on both sides.</p>")
    parts.append("<h2>Tables</h2>")
    for t in tables:
        parts.append(f"<h3>{e(t.title)}</h3><p class='note'>{e(t.note)}</p>{_table(t.wide)}")
    parts.append("<h2>Comparisons</h2>")
    if not comparisons.empty:
        shown = comparisons[[c for c in SHOWN_COLUMNS if c in comparisons.columns]].copy()
        for col in ("rate_a", "rate_b", "effect", "ci_low", "ci_high", "mdd", "tau2"):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        shown["i2"] = shown["i2"].map(lambda v: "" if pd.isna(v) else f"{v:.0%}")
        for col in ("p_value", "p_holm", "q_p", "p_equiv", "p_within", "p_within_holm"):
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        parts.append(_table(shown.rename(columns=SHOWN_COLUMNS)))
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2>Plots</h2>")
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h3>{e(name.replace('_', ' '))}</h3><img alt='{e(name)}' src='data:image/png;base64,{data}'>")
    parts.append("<h2>Methods</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
