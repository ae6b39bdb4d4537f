"""The report's plots, one registered entry each: ``fn(data, ax_factory) -> Figure | None``.

matplotlib with the Agg backend (no display); every figure is written as a PNG and embedded in
report.html. A plot whose data is absent (no decay curve logged, one relation) returns None.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from editdecay.report.data import FT_ORDER, LAYER_ORDER, ReportData  # noqa: E402
from editdecay.report.registry import register_plot  # noqa: E402
from editdecay.report.stats import rate_interval, t_interval  # noqa: E402
from editdecay.report.tables import ds_estimate  # noqa: E402


def _label(row, keys) -> str:
    return " ".join(str(row[k]) for k in keys)


def _rank(values, order):
    return sorted(values, key=lambda v: (order.index(v) if v in order else len(order), str(v)))


@register_plot("efr_heatmap")
def efr_heatmap(data: ReportData):
    """EFR per editor (rows) × FT method / layer selection (columns), mean over seeds and edits."""
    pe = data.per_edit
    if pe.empty or pe["flip"].notna().sum() == 0:
        return None
    pe = pe[pe["ft"] != "none"]
    row_keys = ["editor"] + [k for k in data.varying(["model", "dataset", "n_edits"])]
    rows = sorted({_label(r, row_keys) for _, r in pe.iterrows()})
    cols = [f"{ft}/{la}" for ft in _rank(pe["ft"].unique(), FT_ORDER) for la in _rank(pe["layers"].unique(), LAYER_ORDER)
            if ((pe["ft"] == ft) & (pe["layers"] == la)).any()]
    grid = np.full((len(rows), len(cols)), np.nan)
    pe = pe.assign(_row=pe.apply(lambda r: _label(r, row_keys), axis=1), _col=pe["ft"] + "/" + pe["layers"])
    for (r, c), part in pe.groupby(["_row", "_col"]):
        per_seed = part.groupby("seed")["flip"].mean()
        grid[rows.index(r), cols.index(c)] = per_seed.mean()
    fig, ax = plt.subplots(figsize=(1.3 * len(cols) + 2.5, 0.7 * len(rows) + 1.8))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(0.05, np.nanmax(grid)), aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if not math.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                        color="white" if grid[i, j] < 0.6 * np.nanmax(grid) else "black", fontsize=9)
    fig.colorbar(im, ax=ax, label="EFR")
    ax.set_title("Edit flip ratio (mean over seeds)")
    fig.tight_layout()
    return fig


@register_plot("decay_curves")
def decay_curves(data: ReportData):
    """curve.es by training step, one line per setting: mean across seeds, 95% t-interval band."""
    curves = data.curves
    if curves.empty:
        return None
    keys = ["editor", "ft", "layers"] + data.varying(["model", "dataset", "n_edits"])
    fig, ax = plt.subplots(figsize=(8, 5))
    for label_values, part in curves.groupby(keys, sort=True):
        steps = sorted(part["step"].unique())
        stats = [t_interval(part[part["step"] == s]["es"].tolist()) for s in steps]
        mean = np.array([m for m, _, _ in stats])
        line, = ax.plot(steps, mean, marker=".", label=" ".join(map(str, label_values)))
        low = np.array([lo for _, lo, _ in stats])
        high = np.array([hi for _, _, hi in stats])
        if not np.all(np.isnan(low)):  # ES is a rate: the t-interval is clipped to [0, 1]
            ax.fill_between(steps, np.clip(low, 0, 1), np.clip(high, 0, 1), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("ES of the tracked edits (curve.es)")
    ax.set_title("Decay curves: mean across seeds, 95% t-interval band (clipped to [0, 1])")
    return _finish(fig, ax)


@register_plot("ds_vs_efr")
def ds_vs_efr(data: ReportData):
    """Trade-off: KE→FT downstream accuracy (y) against EFR (x) per setting, with 95% CIs."""
    pe = data.per_edit
    runs = data.usable
    if pe.empty or pe["flip"].notna().sum() == 0:
        return None
    keys = ["editor", "ft", "layers"] + data.varying(["model", "dataset", "n_edits"])
    fig, ax = plt.subplots(figsize=(7, 5))
    markers = {"all": "o", "edited": "s", "non_edited": "^"}
    for values, part in pe[pe["ft"] != "none"].groupby(keys, sort=True):
        efr = rate_interval({s: g["flip"].dropna().tolist() for s, g in part.groupby("seed")})
        sel = runs
        for k, v in zip(keys, values):
            sel = sel[sel[k] == v]
        if sel.empty or math.isnan(efr.mean):
            continue
        ds = ds_estimate(data, sel.drop_duplicates("seed"), "ft")  # the downstream table's interval
        ds_mean, ds_lo, ds_hi = ds.mean, ds.low, ds.high
        if math.isnan(ds_mean):
            continue
        setting = dict(zip(keys, values))
        xerr = None if math.isnan(efr.low) else [[efr.mean - efr.low], [efr.high - efr.mean]]
        yerr = None if math.isnan(ds_lo) else [[ds_mean - ds_lo], [ds_hi - ds_mean]]
        ax.errorbar(efr.mean, ds_mean, xerr=xerr, yerr=yerr, marker=markers.get(setting["layers"], "D"),
                    capsize=3, linestyle="none", label=" ".join(map(str, values)))
    ax.set_xlabel("EFR (higher: more edits removed)")
    ax.set_ylabel("downstream accuracy after KE→FT")
    ax.set_title("Removing edits vs downstream accuracy, 95% CIs as in the tables\n(EFR: exact effective-n; "
                 "DS: bootstrap over seeds × test rows)", fontsize=10)
    return _finish(fig, ax)


@register_plot("relation_flip_rate")
def relation_flip_rate(data: ReportData):
    """Flip rate per relation and editor, pooled over FT settings, with 95% CIs. An edit is measured
    once per FT setting: its flips are averaged over the settings first, so it counts once per seed."""
    pe = data.per_edit
    if pe.empty or "relation" not in pe.columns or pe["flip"].notna().sum() == 0:
        return None
    pe = pe[pe["ft"] != "none"]
    relations = sorted(pe["relation"].dropna().unique(), key=str)
    editors = sorted(pe["editor"].unique())
    fig, ax = plt.subplots(figsize=(min(12, max(6, 0.5 * len(relations) * len(editors) + 2)), 4.5))
    width = 0.8 / max(1, len(editors))
    for i, editor in enumerate(editors):
        means, errs = [], [[], []]
        for rel in relations:
            part = pe[(pe["editor"] == editor) & (pe["relation"] == rel)].dropna(subset=["flip"])
            per_edit = part.groupby(["seed", "case_id"])["flip"].mean().reset_index()
            est = rate_interval({s: g["flip"].tolist() for s, g in per_edit.groupby("seed")})
            means.append(est.mean)
            errs[0].append(0 if math.isnan(est.low) else est.mean - est.low)
            errs[1].append(0 if math.isnan(est.high) else est.high - est.mean)
        x = np.arange(len(relations)) + i * width - 0.4 + width / 2
        ax.bar(x, means, width, yerr=errs, capsize=2, label=editor)
    ax.set_xticks(range(len(relations)), relations)
    ax.set_ylabel("flip rate (EFR)")
    ax.set_xlabel("relation")
    ax.set_title("Flip rate per relation (FT settings averaged per edit; 95% exact effective-n CIs)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _finish(fig, ax):
    """The line plots' common ending: a compact legend, a light grid, tight margins."""
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
