"""`editdecay report`: a real tiny sweep (2 editors × LoRA on edited / non-edited layers × 2 seeds,
plus one trial that fails) logged to a real MLflow server, turned into tables, paired tests,
plots and report.html. Cells are recomputed here by hand from the per-edit CSVs the trials logged;
the statistics helpers are checked against scipy / statsmodels on fixed data."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy.stats import binomtest, bootstrap
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from editdecay import cli
from editdecay.report.stats import (combined_discordant_test, edit_sign_test, hierarchical_bootstrap, holm,
                                    mcnemar_exact, paired_test)

from conftest import REPO, TEST_CACHE

PNGS = {"efr_heatmap.png", "decay_curves.png", "ds_vs_efr.png", "relation_flip_rate.png"}


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, mlflow_server, toy_model_dir):
    """sweeps/smoke_tiny.yaml (8 trials) plus one include whose fine-tuning data is broken (2 FAILED runs)."""
    root = tmp_path_factory.mktemp("report-sweep")
    broken = root / "broken.jsonl"
    broken.write_text(json.dumps({"instruction": "say hi", "input": ""}) + "\n")  # no "output": FT fails
    spec = yaml.safe_load((REPO / "sweeps" / "smoke_tiny.yaml").read_text())
    spec["base"] = str(REPO / "configs" / "tiny.yaml")
    spec["overrides"]["cache_dir"] = str(TEST_CACHE)
    spec["include"] = [{"edit.method": "memit", "finetune.method": "lora", "finetune.layers": "all",
                        "finetune.data.source": "file", "finetune.data.path": str(broken)}]
    file = root / "smoke_tiny.yaml"
    file.write_text(yaml.safe_dump(spec, sort_keys=False))
    rc = cli.main(["sweep", str(file), "--storage", str(root / "st"), "--tracking-uri", mlflow_server])
    state = json.loads((root / "st" / "smoke-tiny" / "editdecay_sweep.json").read_text())
    return {"rc": rc, "root": root, "state": state, "uri": mlflow_server, "storage": root / "st" / "smoke-tiny"}


@pytest.fixture(scope="session")
def report(tiny_sweep, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "smoke-tiny"
    proc = subprocess.run([sys.executable, "-m", "editdecay", "report", "--sweep", tiny_sweep["state"]["sweep_id"],
                           "--out", str(out), "--tracking-uri", tiny_sweep["uri"]],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "stdout": proc.stdout, "summary": json.loads((out / "summary.json").read_text()),
            "tables": pd.read_csv(out / "tables.csv"), "comparisons": pd.read_csv(out / "comparisons.csv")}


def finished_trials(tiny_sweep) -> dict[str, tuple[dict, pd.DataFrame]]:
    """trial id -> (params, per-edit table) for every FINISHED trial run, read straight from MLflow."""
    client = MlflowClient(tiny_sweep["uri"])
    exp = client.get_experiment_by_name("editdecay-smoke-tiny")
    runs = client.search_runs([exp.experiment_id], f"tags.`editdecay.sweep` = '{tiny_sweep['state']['sweep_id']}'")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.info.status == "FINISHED" and "editdecay.trial_id" in r.data.tags:
                path = client.download_artifacts(r.info.run_id, "results/per_edit.csv", tmp + "/" + r.info.run_id)
                out[r.data.tags["editdecay.trial_id"]] = (r.data.params, pd.read_csv(path))
    return out


# ------------------------------------------------------------------------------------------------
# Statistics helpers against scipy / statsmodels on fixed data


def test_bootstrap_matches_scipy_percentile_bootstrap_for_one_seed():
    values = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1, 1] * 2, dtype=float)
    ours = hierarchical_bootstrap({0: values}, n_boot=4000)
    ref = bootstrap((values,), np.mean, method="percentile", n_resamples=4000, confidence_level=0.95,
                    random_state=np.random.default_rng(1)).confidence_interval
    assert ours.mean == pytest.approx(values.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.03) and ours.high == pytest.approx(ref.high, abs=0.03)
    assert ours.n_label() == "1×40"


def test_bootstrap_over_seeds_centres_on_the_mean_of_seed_means_and_widens_with_seed_spread():
    same = hierarchical_bootstrap({0: [0, 1] * 20, 1: [0, 1] * 20})
    apart = hierarchical_bootstrap({0: [0] * 36 + [1] * 4, 1: [1] * 36 + [0] * 4})
    assert same.mean == pytest.approx(0.5) and apart.mean == pytest.approx(0.5)
    assert (apart.high - apart.low) > 2 * (same.high - same.low)  # seed-to-seed spread enters the CI
    assert apart.n_label() == "2×40"
    assert math.isnan(hierarchical_bootstrap({0: [1.0]}).low)  # one observation: no interval


def test_mcnemar_and_combined_test_match_statsmodels_and_scipy():
    a = [1] * 9 + [0] * 2 + [1] * 10 + [0] * 19
    b = [0] * 9 + [1] * 2 + [1] * 10 + [0] * 19
    p, a_only, b_only = mcnemar_exact(a, b)
    ref = mcnemar([[10, 9], [2, 19]], exact=True).pvalue
    assert (a_only, b_only) == (9, 2) and p == pytest.approx(ref)
    assert p == pytest.approx(binomtest(9, 11, 0.5).pvalue)  # exact McNemar = binomial on discordant pairs
    assert combined_discordant_test([(9, 2), (5, 1)]) == pytest.approx(binomtest(14, 17, 0.5).pvalue)
    test = paired_test({0: (a, b), 1: (a, b)})
    assert test.a_only == 18 and test.b_only == 4
    assert test.p_within == pytest.approx(binomtest(18, 22, 0.5).pvalue)  # the within-run (edit-level) test
    assert test.run.effect == pytest.approx((9 - 2) / 40)  # the run-level effect: both seeds say 7/40
    assert test.p_per_seed == {"0": pytest.approx(ref), "1": pytest.approx(ref)}
    # Distinct edits in each seed: the same pooled test.
    ids = {0: [f"x{i}" for i in range(40)], 1: [f"y{i}" for i in range(40)]}
    assert paired_test({0: (a, b), 1: (a, b)}, ids).p_within == pytest.approx(binomtest(18, 22, 0.5).pvalue)


def test_edits_repeated_across_seeds_count_once():
    a = [1] * 9 + [0] * 2 + [1] * 10 + [0] * 19
    b = [0] * 9 + [1] * 2 + [1] * 10 + [0] * 19
    same = {0: list(range(40)), 1: list(range(40))}
    test = paired_test({0: (a, b), 1: (a, b)}, same)
    # The same 40 edits twice are 40 observations: 9 favour A, 2 favour B (not 18 and 4), and those
    # are the counts reported beside the test.
    assert test.p_within == pytest.approx(binomtest(9, 11, 0.5).pvalue)
    assert (test.a_only, test.b_only) == (9, 2) and test.run.effect == pytest.approx(7 / 40)
    pooled = paired_test({0: (a, b), 1: (a, b)})
    assert test.run.high - test.run.low > pooled.run.high - pooled.run.low  # wider: the edits' own variance added
    # An edit that flips one way in one seed and the other way in the next has mean 0: it drops out.
    assert edit_sign_test({0: [1, 1], 1: [-1, 1]}, {0: ["e", "f"], 1: ["e", "f"]}) == pytest.approx(
        binomtest(1, 1, 0.5).pvalue)


def test_holm_matches_statsmodels_and_keeps_nan():
    p = [0.01, 0.04, 0.03, 0.2]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    out = holm([0.01, math.nan, 0.02])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


# ------------------------------------------------------------------------------------------------
# The report of a real tiny sweep


@pytest.mark.slow
def test_report_writes_its_files_and_logs_them_to_the_sweep_parent_run(tiny_sweep, report):
    out = report["out"]
    for name in ("tables.md", "tables.csv", "comparisons.csv", "summary.json", "findings.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert {p.name for p in out.glob("*.png")} == PNGS
    assert f"report: {(out / 'report.html').resolve()}" in report["stdout"]
    client = MlflowClient(tiny_sweep["uri"])
    logged = {f.path for f in client.list_artifacts(tiny_sweep["state"]["parent_run_id"], "report")}
    assert {"report/report.html", "report/tables.md", "report/comparisons.csv"} <= logged
    md = (out / "tables.md").read_text()
    assert "resamples seeds with replacement, then edits" in md and "(n=2×" in md
    assert not list(out.parent.glob(".smoke-tiny.*"))  # no temporary directory left behind


@pytest.mark.slow
def test_table_cells_equal_values_recomputed_from_the_per_edit_csvs(tiny_sweep, report):
    trials = finished_trials(tiny_sweep)
    tables = report["tables"]
    assert len(trials) == 8
    for editor in ("memit", "alphaedit"):
        for layers in ("edited", "non_edited"):
            per_seed_efr, per_seed_es = [], []
            for seed in (0, 1):
                _, pe = trials[f"{editor}-lora-{layers}-s{seed}"]
                ok = pe[pe["es_edit"] >= 1]
                per_seed_efr.append(float((ok["es_ft"] < 1).mean()))
                per_seed_es.append(float(pe["es_ft"].mean()))
            efr_row = tables[(tables["table"] == "efr") & (tables["editor"] == editor) & (tables["layers"] == layers)]
            assert len(efr_row) == 1
            assert efr_row["mean"].iloc[0] == pytest.approx(np.mean(per_seed_efr), abs=1e-9)
            assert efr_row["ci_low"].iloc[0] <= efr_row["mean"].iloc[0] <= efr_row["ci_high"].iloc[0]
            assert efr_row["n_seeds"].iloc[0] == 2
            es_row = tables[(tables["table"] == "edit_quality") & (tables["metric"] == "es") & (tables["editor"] == editor)
                            & (tables["column"] == f"KE→FT · lora/{layers}")]
            assert es_row["mean"].iloc[0] == pytest.approx(np.mean(per_seed_es), abs=1e-9)
            assert es_row["n_label"].iloc[0] == "2×20"
        # KE-only is one model per seed: each edit counted once per seed, not once per trial.
        _, pe = trials[f"{editor}-lora-edited-s0"]
        ke = tables[(tables["table"] == "edit_quality") & (tables["metric"] == "es") & (tables["editor"] == editor)
                    & (tables["column"] == "KE-only")]
        assert ke["mean"].iloc[0] == pytest.approx(pe["es_edit"].mean()) and ke["n"].iloc[0] == 40


@pytest.mark.slow
def test_paired_layer_comparison_is_exact_mcnemar_per_seed_on_the_same_edits(tiny_sweep, report):
    trials = finished_trials(tiny_sweep)
    comp = report["comparisons"]
    row = comp[(comp["comparison"] == "layers") & (comp["a"] == "edited") & (comp["b"] == "non_edited")
               & (comp["editor"] == "memit")].iloc[0]
    discordant, per_seed, differences = [], {}, []
    for seed in (0, 1):
        a = trials[f"memit-lora-edited-s{seed}"][1].set_index("case_id")
        b = trials[f"memit-lora-non_edited-s{seed}"][1].set_index("case_id")
        ok = a.index[(a["es_edit"] >= 1) & (b.loc[a.index, "es_edit"] >= 1)]
        fa, fb = (a.loc[ok, "es_ft"] < 1), (b.loc[ok, "es_ft"] < 1)
        x, y = int((fa & ~fb).sum()), int((~fa & fb).sum())
        discordant.append((x, y))
        differences.append(fa.astype(int) - fb.astype(int))
        if x + y:
            table = [[int((fa & fb).sum()), x], [y, int((~fa & ~fb).sum())]]
            per_seed[str(seed)] = mcnemar(table, exact=True).pvalue
    # Both seeds edit the same records (tiny.yaml: edit.selection first): within these runs each edit
    # counts once, with its flip difference averaged over the seeds (a sign test over edits), and
    # a_only / b_only are that test's counts.
    per_edit = pd.concat(differences).groupby(level=0).mean()
    positive, negative = int((per_edit > 0).sum()), int((per_edit < 0).sum())
    assert (row["a_only"], row["b_only"]) == (positive, negative)
    expected_p = binomtest(positive, positive + negative, 0.5).pvalue if positive + negative else 1.0
    assert row["p_within"] == pytest.approx(expected_p)
    for seed, p in per_seed.items():
        assert json.loads(row["p_per_seed"])[seed] == pytest.approx(p)
    # The deciding statistic: per-seed risk differences, combined over the 2 seeds (t with 1 df).
    seed_effects = [float(d.mean()) for d in differences]
    assert json.loads(row["seed_effects"]) == pytest.approx(seed_effects, abs=1e-4)
    assert row["df"] == 1 and min(seed_effects) - 1e-9 <= row["effect"] <= max(seed_effects) + 1e-9
    assert row["ci_low"] <= row["effect"] <= row["ci_high"]
    tested = comp[comp["p_value"].notna()]
    assert list(tested["p_holm"]) == pytest.approx(list(multipletests(tested["p_value"], method="holm")[1]))
    within = comp[comp["p_within"].notna()]
    assert list(within["p_within_holm"]) == pytest.approx(list(multipletests(within["p_within"], method="holm")[1]))
    # MEMIT vs AlphaEdit: compared on the same records, in every layer selection of the grid
    assert set(comp[comp["comparison"] == "editor"]["layers"]) == {"edited", "non_edited"}


@pytest.mark.slow
def test_edits_vs_native_table_recomputes_from_the_runs(tiny_sweep, report):
    client = MlflowClient(tiny_sweep["uri"])
    exp = client.get_experiment_by_name("editdecay-smoke-tiny")
    runs = client.search_runs([exp.experiment_id], f"tags.`editdecay.sweep` = '{tiny_sweep['state']['sweep_id']}' "
                              "and params.`edit.method` = 'memit' and params.`finetune.method` = 'lora' "
                              "and params.`finetune.layers` = 'edited'")
    retained, retained_base, survived = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in runs:
            if r.info.status != "FINISHED":
                continue
            seed = int(r.data.params["seed"])
            native = pd.read_csv(client.download_artifacts(r.info.run_id, "results/native_facts.csv", f"{tmp}/{seed}"))
            known = native[native["known_base"]]
            retained_base[seed] = known["known_ft"].mean()
            assert retained_base[seed] == pytest.approx(r.data.metrics["native.retention"])  # the trial's own metric
            retained[seed] = native[native["known_edit"]]["known_ft"].mean()  # the edits' conditioning
            survived[seed] = 1 - r.data.metrics["survival.efr"]
    rows = report["tables"][(report["tables"]["table"] == "edits_vs_native") & (report["tables"]["editor"] == "memit")]
    cell = lambda column: rows[rows["column"] == column].iloc[0]  # noqa: E731
    assert cell("native retained (known by base) · lora/edited")["mean"] == pytest.approx(np.mean(list(retained_base.values())))
    assert cell("native retained (known after editing) · lora/edited")["mean"] == pytest.approx(np.mean(list(retained.values())))
    assert cell("edits survive · lora/edited")["mean"] == pytest.approx(np.mean(list(survived.values())))
    diff = cell("edits − native (after editing) · lora/edited")
    differences = [survived[s] - retained[s] for s in survived]  # combined over seeds by the random-effects model
    assert min(differences) - 1e-9 <= diff["mean"] <= max(differences) + 1e-9
    assert diff["ci_low"] <= diff["mean"] <= diff["ci_high"]
    comp = report["comparisons"]
    native_row = comp[(comp["kind"] == "native") & (comp["editor"] == "memit") & (comp["layers"] == "edited")].iloc[0]
    assert native_row["effect"] == pytest.approx(diff["mean"]) and native_row["p_holm"] >= native_row["p_value"]


@pytest.mark.slow
def test_findings_quote_the_comparison_numbers(report):
    found = report["summary"]["findings"]
    comp = report["comparisons"]
    assert len(found) == comp["effect"].notna().sum() > 0
    for f in found:
        assert "Holm-adjusted" in f["text"] and "2 seeds ×" in f["text"] and "t with 1 df" in f["text"]
    # Two seeds: the header says method-level claims are weak and what the design can reach at best.
    assert any("2 seeds: method-level claims are weak" in w and "p = 0.5" in w for w in report["summary"]["warnings"])
    text = (report["out"] / "findings.md").read_text()
    assert all(f["text"] in text for f in found)


@pytest.mark.slow
def test_partly_failed_sweep_reports_what_is_missing(tiny_sweep, report):
    assert tiny_sweep["rc"] == 1  # the sweep itself reports the failure
    missing = report["summary"]["missing"]
    assert sorted(m["status"] for m in missing) == ["FAILED", "FAILED"]
    assert all("memit-lora-all" in m["trial_id"] for m in missing)
    assert "2 trial(s) missing" in report["stdout"]
    assert "2 trial(s) missing from the statistics" in (report["out"] / "report.html").read_text()
    assert report["summary"]["n_used"] == 8


def one_line_error(args: list[str], capsys) -> str:
    rc = cli.main(["report", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tiny_sweep, tmp_path, capsys):
    uri, sweep_id = tiny_sweep["uri"], tiny_sweep["state"]["sweep_id"]
    out = tmp_path / "r"
    err = one_line_error(["--sweep", "smoke-nope1234", "--out", str(out), "--tracking-uri", uri], capsys)
    assert "unknown sweep id 'smoke-nope1234'" in err
    err = one_line_error(["--experiment", "editdecay-smoke-tiny", "--filter", "params.`edit.method` = 'rome'",
                          "--out", str(out), "--tracking-uri", uri], capsys)
    assert "matches no trial run of experiment 'editdecay-smoke-tiny'" in err
    MlflowClient(uri).create_experiment("report-other")
    err = one_line_error(["--sweep", sweep_id, "--experiment", "report-other", "--out", str(out), "--tracking-uri", uri],
                         capsys)
    assert "ran in experiment 'editdecay-smoke-tiny', not 'report-other'" in err
    err = one_line_error(["--experiment", "report-other", "--filter", f"tags.`editdecay.sweep` = '{sweep_id}'",
                          "--out", str(out), "--tracking-uri", uri], capsys)
    assert "from another experiment (editdecay-smoke-tiny)" in err
    err = one_line_error(["--experiment", "no-such-experiment", "--out", str(out), "--tracking-uri", uri], capsys)
    assert "experiment 'no-such-experiment' not found" in err
    assert not out.exists()  # nothing half-written


@pytest.mark.slow
def test_report_reads_a_sweep_storage_dir_and_a_filter(tiny_sweep, tmp_path):
    from editdecay.report import write_report
    from editdecay.tracking.read import read_experiment, read_sweep

    runs = read_sweep(str(tiny_sweep["storage"]))  # the tracking URI comes from the sweep's state file
    assert runs.sweep_id == tiny_sweep["state"]["sweep_id"] and len(runs.trials) == 10
    only_memit = read_experiment("editdecay-smoke-tiny", "params.`edit.method` = 'memit' and attributes.status = 'FINISHED'",
                                 tracking_uri=tiny_sweep["uri"])
    assert len(only_memit.trials) == 4
    result = write_report(only_memit, tmp_path / "memit", log_to_parent=False)
    assert result.n_usable == 4 and not result.missing


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless chromium not installed")
def test_report_html_is_self_contained_and_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image

    html = (report["out"] / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", html) and "<script" not in html  # no network
    assert html.count("data:image/png;base64,") == 4
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,2400", (report["out"] / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = matplotlib.image.imread(shot)[..., :3]
    non_white = (pixels < 0.95).any(axis=-1).mean()
    assert non_white > 0.02 and pixels.std() > 0.05  # text, tables and plots drawn, not a blank page


def test_sweep_summary_aggregates_over_seeds():
    from editdecay.sweep.runner import SweepOutcome, seed_summary_table

    rows = [{"trial_id": f"memit-lora-all-s{seed}", "status": "FINISHED", "edit.method": "memit", "finetune.method": "lora",
             "finetune.layers": "all", "seed": seed, "edit.es": 0.8, "ft.es": ft_es, "survival.efr": 1 - ft_es,
             "ft.ds.acc": 0.3} for seed, ft_es in enumerate([0.5, 0.7])]
    rows.append({**rows[0], "trial_id": "memit-lora-all-s2", "seed": 2, "status": "FAILED", "ft.es": math.nan})
    text = seed_summary_table(SweepOutcome("sweep-x", "parent", "sqlite://", "exp", rows))
    line = text.splitlines()[-1]
    assert "2/3" in line and "0.600 ± 0.141" in line and "0.800 ± 0.000" in line


def test_selection_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    err = one_line_error(["--out", str(tmp_path / "r")], capsys)
    assert "give --sweep ID" in err
    err = one_line_error(["--sweep", str(tmp_path / "st" / "smoke"), "--out", str(tmp_path / "r")], capsys)
    assert "no sweep state (editdecay_sweep.json)" in err
    err = one_line_error(["--sweep", "smoke-1", "--filter", "params.seed = '0'", "--out", str(tmp_path / "r")], capsys)
    assert "--filter goes with --experiment" in err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------
# Issue 25: where the report is logged (tracking.runs.log_report)


@pytest.mark.slow
def test_mlflow_run_report_of_an_experiment_is_one_run_and_leaves_the_sweeps_report(tiny_sweep, tmp_path):
    """`mlflow run . -e report` with --experiment: the project run is the report's run (no empty run
    left in Default), and the sweep's parent keeps its own report/ (it used to be overwritten)."""
    import os
    from pathlib import Path

    client = MlflowClient(tiny_sweep["uri"])
    parent = tiny_sweep["state"]["parent_run_id"]
    before = {f.path: f.file_size for f in client.list_artifacts(parent, "report")}
    env = {**os.environ, "MLFLOW_TRACKING_URI": tiny_sweep["uri"],
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run([sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "report", "--env-manager", "local",
                           "--experiment-name", "report-runs", "-P", "sweep=", "-P", "experiment=editdecay-smoke-tiny",
                           "-P", "filter=params.`edit.method` = 'memit' and attributes.status = 'FINISHED'",
                           "-P", f"out={tmp_path / 'rep'}", "-P", f"tracking_uri={tiny_sweep['uri']}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`mlflow.project.entryPoint` = 'report'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["editdecay.kind"] == "report"
    assert "report/report.html" in {f.path for f in client.list_artifacts(runs[0].info.run_id, "report")}
    assert {f.path: f.file_size for f in client.list_artifacts(parent, "report")} == before
