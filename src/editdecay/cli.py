"""The ``editdecay`` command line.

Every command takes ``[CONFIG] [key=value ...]``: an optional YAML trial config, then dotted
overrides (``edit.method=alphaedit``). ``--overrides "a=1 b=2"`` takes them as one string too,
which is how ``MLproject`` entry points pass them. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from editdecay import __version__
from editdecay.errors import EditDecayError, Terminated
from editdecay.io import check_output_dir

log = logging.getLogger("editdecay")

# Recall targets for the default toy model (foundation issue): it must really know its facts.
RECALL_TARGETS = {"canonical": 0.90, "paraphrase": 0.70}


def _config_and_overrides(args: argparse.Namespace):
    from editdecay.config import load_config

    items = [a for a in args.args if a != ""]
    config_path = None
    if items and "=" not in items[0]:
        config_path, items = items[0], items[1:]
    for item in items:
        if "=" not in item:
            raise EditDecayError(f"argument '{item}': expected key=value after the config file (e.g. edit.method=alphaedit)")
    items += shlex.split(args.overrides or "")
    return load_config(config_path, items)


def cmd_prepare(args: argparse.Namespace) -> int:
    """Build (or reuse) the fact world and toy model; print how well it recalls its facts.
    For a named source (``smollm2-135m``) or a ``.gguf`` file: fetch/convert it once, print provenance."""
    from editdecay.world.toy import ensure_toy_model, read_report, toy_dir

    cfg = _config_and_overrides(args)
    if cfg.model.name != "toy":
        return _prepare_pretrained(cfg, args)
    cached = toy_dir(cfg).is_dir() and not args.force
    print(f"editdecay prepare: {'reusing' if cached else 'building'} the toy {cfg.model.toy.arch} model "
          f"for fact world seed {cfg.world.seed}", flush=True)
    model_dir = ensure_toy_model(cfg, force=args.force)
    report = read_report(model_dir)
    ok = {k: getattr(report, k) >= v for k, v in RECALL_TARGETS.items()}
    print(f"  model dir   {model_dir}")
    print(f"  model       {report.arch}, {report.n_parameters / 1e6:.2f}M parameters")
    print(f"  facts       {report.n_facts}")
    print(f"  recall      canonical {report.canonical:6.1%}   paraphrase {report.paraphrase:6.1%}   "
          f"question {report.question:6.1%}   (top-1, every target token)")
    print("  targets     " + "   ".join(f"{k} >= {v:.0%} {'ok' if ok[k] else 'MISSED'}" for k, v in RECALL_TARGETS.items()))
    print(f"  build time  {report.build_seconds:.0f} s" + ("  (cached; --force rebuilds)" if cached else ""))
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), **report.__dict__}))
    return 0


def _prepare_pretrained(cfg, args: argparse.Namespace) -> int:
    from editdecay.model_sources import prepared_model_dir, read_provenance

    print(f"editdecay prepare: model {cfg.model.name}", flush=True)
    model_dir = prepared_model_dir(cfg.model.name, cfg.cache_dir)
    if model_dir is None:
        print("  nothing to prepare: hub ids and model directories are loaded as they are")
        return 0
    prov = read_provenance(model_dir) or {}
    print(f"  model dir   {model_dir}")
    for key in ("package", "version", "wheel_sha256", "license", "upstream", "path", "sha256", "n_parameters"):
        if key in prov:
            print(f"  {key:<13} {prov[key]}")
    if args.json:
        print(json.dumps({"model_dir": str(model_dir), **prov}))
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    """Run an MLflow tracking server (sqlite backend, proxied artifacts) in the foreground."""
    from editdecay.tracking.server import check_root, serve_foreground, server_command

    root = Path(args.root)
    check_root(root)
    print(f"editdecay server: http://{args.host}:{args.port}  (store {root.resolve()}/mlflow.db, artifacts "
          f"{root.resolve()}/artifacts)\n  clients: export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}", flush=True)
    return serve_foreground(server_command(root, args.host, args.port, args.workers,
                                           [h for h in args.allowed_hosts.split(",") if h]))


def cmd_trial(args: argparse.Namespace) -> int:
    """One tracked trial: base → edit → fine-tune → evaluate → survival, logged to MLflow."""
    from editdecay.preflight import check_trial_inputs

    cfg = _config_and_overrides(args)
    check_trial_inputs(cfg)  # before torch, MLflow or any run exists
    from editdecay.pipeline.trial import GROUPS, run_trial
    from editdecay.tracking import redact_uri, resolve_tracking_uri

    result = run_trial(cfg, force=args.force)
    print(f"editdecay trial '{cfg.name}': run {result.run_id} in experiment '{cfg.tracking.experiment}' "
          f"({redact_uri(resolve_tracking_uri(cfg.tracking.uri))}), {result.seconds:.0f} s")
    print("\n".join(trial_summary(result.metrics, GROUPS, result.native_missing)))
    print(f"  stages   built: {', '.join(result.cache_misses) or '-'}   reused: {', '.join(result.cache_hits) or '-'}")
    return 0


def trial_summary(m: dict[str, float], groups, native_missing: str | None = None) -> list[str]:
    """The trial's console table: ES/PS/NS/DS per group, survival (metrics/survival.py) and the
    native-fact control (metrics/native.py), every number as the run logged it."""
    nan = float("nan")
    lines = [f"  {'group':8s} {'ES':>6s} {'PS':>6s} {'NS':>6s} {'DS':>6s}"]
    for group in groups:
        if f"{group}.es" in m:
            lines.append(f"  {group:8s} " + " ".join(f"{m.get(f'{group}.{k}', nan):6.3f}" for k in ("es", "ps", "ns", "ds.acc")))
    if "survival.n_edits" in m:
        lines.append(f"  survival {m['survival.survival']:.3f}   EFR {m['survival.efr']:.3f}   "
                     f"decrease {m['survival.decrease']:.3f}   ({int(m['survival.n_flipped'])} of "
                     f"{int(m['survival.n_successful'])} successful edits flipped; decrease = (ES edit - ES ft) / ES edit)")
    if native_missing:
        lines.append(f"  native   missing: {native_missing}")
    elif "native.n_facts" in m:
        found = (f"{int(m['native.n_found'])} facts the base model knows, found in {int(m['native.n_tried'])} tried"
                 if "native.n_tried" in m else f"{int(m['native.n_facts'])} facts")
        parts = [f"{name} {m[key]:.3f}" for name, key in (("FT-only", "native.retention_ftonly"),
                                                         ("KE-only", "native.retention_edit")) if key in m]
        if "native.retention" in m:
            lines.append(f"  native   retention {m['native.retention']:.3f} [{m['native.retention_ci_low']:.3f}, "
                         f"{m['native.retention_ci_high']:.3f}] after KE->FT" + (f" ({', '.join(parts)})" if parts else "")
                         + f"; {found}")
        else:
            lines.append(f"  native   {found}" + (f"; retention {', '.join(parts)}" if parts else ""))
    return lines


def cmd_config(args: argparse.Namespace) -> int:
    """Validate a config and print it resolved (defaults filled, overrides applied) with its hash."""
    from editdecay.config import stable_hash, to_yaml

    cfg = _config_and_overrides(args)
    print(f"# config hash {stable_hash(cfg)}")
    print(to_yaml(cfg, redact=True), end="")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    """Load the edit dataset the config names and summarise it."""
    from editdecay.data.edits import load_edit_dataset

    cfg = _config_and_overrides(args)
    records = load_edit_dataset(cfg)
    relations = sorted({r.relation_id or "-" for r in records})
    print(f"{len(records)} edit records from source '{cfg.data.source}' ({len({r.subject for r in records})} distinct subjects, "
          f"relations: {', '.join(relations[:12])}{' ...' if len(relations) > 12 else ''})")
    for record in records[: args.show]:
        print(json.dumps(record.to_dict(), ensure_ascii=False))
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    """Write the fact world's datasets as files (edit sets, zsRE rows, downstream task, corpus)."""
    from editdecay.world.export import export_world

    cfg = _config_and_overrides(args)
    check_output_dir(args.out)
    written = export_world(cfg.world, Path(args.out))
    for name, path in written.items():
        print(f"  {name:18s} {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune the model as ``finetune.*`` says; print losses (and DS with --ds)."""
    from editdecay.finetune.run import finetune, load_finetuned
    from editdecay.io import atomic_write_json
    from editdecay.models import resolve_model_path

    cfg = _config_and_overrides(args)
    check_output_dir(args.out)
    model_dir = args.model or resolve_model_path(cfg)
    ds_before = _downstream(cfg, model_dir, None) if args.ds else {}
    result = finetune(cfg, model_dir, args.out, deltas=args.deltas, weights=args.weights)
    m = result.metrics
    print(f"editdecay finetune: {cfg.finetune.method} on layers {result.layers}, {m['trainable_params']:,} of "
          f"{m['total_params']:,} parameters trained, {m['steps']} steps, loss {m['first_loss']:.4f} -> "
          f"{m['last_loss']:.4f}, {m['train_tokens_per_s']:.0f} tokens/s")
    print(f"  output      {result.out_dir}  ({result.model_path.name}/)")
    if args.ds:
        model, tokenizer = load_finetuned(result.out_dir, model_dir, cfg.model)
        ds_after = _downstream(cfg, model, tokenizer)
        for key in ds_after:
            print(f"  {key:18s} {ds_before.get(key, float('nan')):.3f} -> {ds_after[key]:.3f}")
        atomic_write_json(result.out_dir / "metrics.json",
                          {**m, **{f"base.{k}": v for k, v in ds_before.items()}, **{f"ft.{k}": v for k, v in ds_after.items()}})
    return 0


def _downstream(cfg, model_or_dir, tokenizer, prefix: str | None = None) -> dict[str, float]:
    from editdecay.metrics.downstream import evaluate_configured
    from editdecay.models import load_model

    if tokenizer is None:
        model_or_dir, tokenizer = load_model(cfg.model, model_or_dir)
    return evaluate_configured(cfg, model_or_dir, tokenizer).metrics(*([prefix] if prefix else []))


def cmd_evaluate(args: argparse.Namespace) -> int:
    """ES/PS/NS on the configured edit set and DS, for a model dir, finetune output dir or the config's model."""
    from editdecay.editing.run import edit_records
    from editdecay.finetune.run import load_finetuned
    from editdecay.io import atomic_directory
    from editdecay.metrics.edit import evaluate_edits
    from editdecay.models import load_model, resolve_model_path

    cfg = _config_and_overrides(args)
    if args.out:
        check_output_dir(args.out)
    target = Path(args.model) if args.model else None
    if target is not None and any((target / sub).is_dir() for sub in ("adapter", "merged", "model")):
        model, tokenizer = load_finetuned(target, args.base, cfg.model)  # a finetune output directory
    else:
        model, tokenizer = load_model(cfg.model, str(target) if target else resolve_model_path(cfg))
    edits = evaluate_edits(model, tokenizer, edit_records(cfg), cfg.eval.batch_size)
    metrics = {**edits.summary, **_downstream(cfg, model, tokenizer, prefix="ds")}
    print(f"editdecay evaluate: {target or cfg.model.name}, {len(edits.per_edit)} edit records")
    for key, value in metrics.items():
        print(f"  {key:18s} {value:.4f}")
    if args.out:
        with atomic_directory(args.out) as tmp:  # the directory appears whole or not at all
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
            edits.per_edit.to_parquet(tmp / "per_edit.parquet", index=False)
        print(f"  wrote {args.out}/metrics.json, per_edit.parquet")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Compute (or find cached) the layer second moments the configured editor needs."""
    from editdecay.editing.run import run_stats

    cfg = _config_and_overrides(args)
    moments = run_stats(cfg)
    s = cfg.edit.stats
    for layer, C in moments.items():
        print(f"  layer {layer:3d}  C {tuple(C.shape)} {str(C.dtype).removeprefix('torch.')}  trace {float(C.trace()):.4g}")
    print(f"  corpus {s.corpus}, n_samples {s.n_samples}, max_length {s.max_length}; cached under {cfg.cache_dir}/stats")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    """Edit the model with the configured editor; write deltas, per-edit table and metrics to --out."""
    from editdecay.editing.run import run_edit

    cfg = _config_and_overrides(args)
    check_output_dir(args.out)
    metrics = run_edit(cfg, args.out)
    print(f"editdecay edit: {cfg.edit.method}, {metrics['edit.n_edits']} edits in {metrics['edit.seconds']:.1f} s "
          f"({rate(metrics['edit.n_edits'], metrics['edit.seconds'], 'edit')})")
    for m in ("es", "ps", "ns"):
        print(f"  {m}  base {metrics[f'base.{m}']:6.1%}  ->  edited {metrics[f'edit.{m}']:6.1%}")
    print(f"  wrote {args.out}")
    return 0


def rate(count: float, seconds: float, unit: str) -> str:
    """A speed a reader can use: ``12.5 edits/s`` at one a second or more, else ``2.4 edits/min``
    down to one a minute, else ``95 s/edit`` (never "0.0 edits/s")."""
    if count <= 0 or seconds <= 0:
        return f"no {unit}s" if count <= 0 else f"{count:g} {unit}s in no measurable time"
    per_second = count / seconds
    if per_second >= 1:
        return f"{per_second:.3g} {unit}s/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:.3g} {unit}s/min"
    return f"{seconds / count:.3g} s/{unit}"


def cmd_sweep(args: argparse.Namespace) -> int:
    """Expand a sweep file into trials and run them with Ray Tune (or just print them: --dry-run)."""
    from editdecay.sweep.grid import load_sweep, trial_table

    sweep = load_sweep(args.file, tracking_uri=args.tracking_uri)
    if args.dry_run:  # no Ray, no MLflow, no files: the grid as it would run
        print(f"sweep '{sweep.name}' ({args.file}): {len(sweep.trials)} trials, grid hash {sweep.grid_hash()}, "
              f"resources per trial {sweep.spec.resources.model_dump()}")
        print(trial_table(sweep))
        print(f"{len(sweep.trials)} trials")
        return 0
    from editdecay.sweep.runner import run_sweep, seed_summary_table, summary_table, where_to_look, write_summary

    outcome = run_sweep(sweep, storage=args.storage, address=args.address, resume=args.resume, fresh=args.fresh,
                        max_concurrent=args.max_concurrent, connect_timeout=args.connect_timeout,
                        autoscaler_config=args.autoscaler_config)
    print(summary_table(outcome, sweep))
    if len({r["seed"] for r in outcome.rows}) > 1:
        print(f"\nover seeds:\n{seed_summary_table(outcome)}")
    write_summary(outcome, sweep, Path(args.storage).resolve() / sweep.name)
    n_finished = len(sweep.trials) - outcome.n_failed - outcome.n_not_run
    print(f"{n_finished} of {len(sweep.trials)} trials finished"
          + (f", {outcome.n_failed} failed" if outcome.n_failed else "")
          + (f", {outcome.n_not_run} not run" if outcome.n_not_run else "")
          + (" (--resume runs them)" if outcome.n_failed or outcome.n_not_run else ""))
    print(where_to_look(outcome))
    return 1 if outcome.n_failed or outcome.n_not_run else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Tables, paired tests, plots and report.html for a sweep (or filtered runs), from MLflow only."""
    from editdecay.report import write_report
    from editdecay.tracking.read import ReportInputError, read_experiment, read_sweep

    sweep, experiment = args.sweep or None, args.experiment or None  # MLproject passes '' for "not given"
    if not sweep and not experiment:
        raise ReportInputError("give --sweep ID (or a sweep storage dir such as sweep-results/smoke) or --experiment NAME")
    if sweep and args.filter:
        raise ReportInputError(f"--filter goes with --experiment, not --sweep; to filter a sweep's runs use --experiment NAME "
                               f"--filter \"tags.`editdecay.sweep` = '{sweep}' and ...\"")
    if sweep:
        runs = read_sweep(sweep, tracking_uri=args.tracking_uri or None, experiment=experiment)
    else:
        runs = read_experiment(experiment, args.filter or "", tracking_uri=args.tracking_uri or None)
    result = write_report(runs, args.out, log_to_parent=not args.no_log)
    print(f"editdecay report: {runs.description}: {result.n_usable} of {result.n_runs} runs used, "
          f"{len(result.missing)} trial(s) missing, {result.seconds:.1f} s")
    for m in result.missing:
        print(f"  missing  {m['trial_id']}: {m['status']}" + (f" ({m['reason']})" if m.get("reason") else ""))
    if result.logged_to:
        print(f"  logged as artifacts report/ of parent run {result.logged_to}")
    print(f"report: {result.html.resolve()}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Causal tracing of the MLP at the subject's last token; writes the curve and proposes edit layers."""
    from editdecay.editing.run import edit_records
    from editdecay.editing.trace import propose_layers, trace_mlp
    from editdecay.io import atomic_directory
    from editdecay.models import load_model, resolve_model_path

    check_output_dir(args.out)
    cfg = _config_and_overrides(args)
    records = edit_records(cfg)[: args.records]
    model, tokenizer = load_model(cfg.model, resolve_model_path(cfg))
    result = trace_mlp(model, tokenizer, records, window=args.window, n_noise=args.noise_samples, seed=cfg.seed)
    proposal = propose_layers(result, args.n_layers)
    with atomic_directory(Path(args.out)) as tmp:
        _write_trace(tmp, result, proposal, len(records), cfg.model.name)
    print(f"editdecay trace: {len(records)} records, window {result.window}, p(clean) {result.clean_prob:.3f}, "
          f"p(corrupted) {result.corrupted_prob:.3f}")
    peak = max(result.layers, key=lambda i: result.indirect_effect[i])
    print(f"  peak        layer {peak} (indirect effect {result.indirect_effect[peak]:+.4f})")
    print(f"  proposal    edit.layers={proposal}")
    print(f"  output      {args.out}/trace.csv, trace.png, trace.json")
    return 0


def _write_trace(out: Path, result, proposal: list[int], n_records: int, model_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["layer,indirect_effect"] + [f"{layer},{ie:.6f}" for layer, ie in zip(result.layers, result.indirect_effect)]
    (out / "trace.csv").write_text("\n".join(lines) + "\n")
    (out / "trace.json").write_text(json.dumps({
        "model": model_name, "records": n_records, "window": result.window, "clean_prob": result.clean_prob,
        "corrupted_prob": result.corrupted_prob, "indirect_effect": result.indirect_effect,
        "proposed_layers": proposal}, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(result.layers, result.indirect_effect, color=["tab:red" if i in proposal else "tab:gray" for i in result.layers])
    ax.set_xlabel("layer (centre of restored MLP window)")
    ax.set_ylabel("indirect effect on p(answer)")
    ax.set_title(f"{model_name}: MLP at the subject's last token, {n_records} records, window {result.window}")
    fig.tight_layout()
    fig.savefig(out / "trace.png", dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="editdecay", description="Do knowledge edits survive fine-tuning?")
    parser.add_argument("--version", action="version", version=f"editdecay {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, func, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("args", nargs="*", metavar="[CONFIG] [key=value ...]",
                       help="optional YAML trial config, then dotted overrides such as edit.method=alphaedit")
        p.add_argument("--overrides", default="", help='overrides as one string, e.g. "world.seed=1 model.toy.arch=llama"')
        p.set_defaults(func=func)
        return p

    p = add("prepare", cmd_prepare, "build (or reuse) the fact world and toy model and print its recall")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--json", action="store_true", help="also print the report as one JSON line")
    p = sub.add_parser("server", help="run an MLflow tracking server (sqlite + proxied artifacts)",
                       description="run an MLflow tracking server (sqlite + proxied artifacts), bound to 127.0.0.1 by default")
    p.add_argument("--root", default="mlflow-server", help="directory for mlflow.db and artifacts/")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to serve a cluster)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--allowed-hosts", default="", help="extra comma-separated names clients use for this server "
                   "(its own names and addresses are allowed automatically with --host 0.0.0.0)")
    p.set_defaults(func=cmd_server)
    p = add("trial", cmd_trial, "run one tracked trial (base, FT-only, KE-only, KE->FT) and log it to MLflow")
    p.add_argument("--force", action="store_true", help="recompute every stage instead of reusing the stage cache")
    add("config", cmd_config, "validate a config and print it resolved, with its hash")
    p = add("trace", cmd_trace, "causal tracing: where the model recalls facts (MLP indirect effect per layer); proposes edit layers")
    p.add_argument("--out", required=True, help="output directory (trace.csv, trace.png, trace.json)")
    p.add_argument("--records", type=int, default=50, help="how many edit records to trace (the first N)")
    p.add_argument("--window", type=int, default=5, help="consecutive MLP layers restored around each layer")
    p.add_argument("--noise-samples", type=int, default=10, help="noise draws per record")
    p.add_argument("--n-layers", type=int, default=5, help="how many contiguous layers to propose")
    p = sub.add_parser("sweep", help="run a sweep file's grid of trials with Ray Tune, tracked in MLflow",
                       description="run a sweep file's grid of trials with Ray Tune, tracked in MLflow")
    p.add_argument("file", help="sweep YAML (sweeps/*.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded trial table and its size; start nothing")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep (same --storage)")
    p.add_argument("--fresh", action="store_true", help="discard this sweep's saved state and start over")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", default="sweep-results", help="directory for Tune's state and the sweep summary")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for every trial (default: the config's)")
    p.add_argument("--max-concurrent", type=int, default=None, help="override the sweep file's max_concurrent_trials")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for a Ray cluster address")
    p.add_argument("--autoscaler-config", default=None,
                   help="cluster launcher YAML: trials queue for GPUs its workers can add (default: ~/ray_bootstrap_config.yaml on a head)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("report", help="tables, paired tests, plots and report.html for a sweep, read from MLflow",
                       description="tables, paired tests, plots and report.html for a sweep, read from MLflow")
    p.add_argument("--sweep", default=None, help="sweep id (tag editdecay.sweep) or a sweep storage dir (sweep-results/NAME)")
    p.add_argument("--experiment", default=None, help="experiment name (with --filter; with --sweep: a check)")
    p.add_argument("--filter", default="", help="MLflow filter string over the experiment's runs")
    p.add_argument("--out", required=True, help="output directory (written whole)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--no-log", action="store_true", help="do not log the files to the sweep's parent run")
    p.set_defaults(func=cmd_report)
    p = add("data", cmd_data, "load the configured edit dataset and summarise it")
    p.add_argument("--show", type=int, default=2, help="records to print")
    p = add("world", cmd_world, "export the fact world's datasets to a directory")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    add("stats", cmd_stats, "compute (or reuse) the layer second moments the editor needs")
    p = add("edit", cmd_edit, "edit the model (MEMIT / AlphaEdit) and write deltas, per-edit metrics and a summary")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p = add("evaluate", cmd_evaluate, "ES/PS/NS on the configured edit set and DS for a model or finetune output")
    p.add_argument("--model", default=None, help="model dir / hub id, or a finetune output dir (default: the config's model)")
    p.add_argument("--base", default=None, help="base model of a finetune output's adapter (default: from adapter_config.json)")
    p.add_argument("--out", default=None, help="directory for metrics.json and per_edit.parquet")
    p = add("finetune", cmd_finetune, "fine-tune a model (full/DeepSpeed, LoRA, DoRA) into an output directory")
    p.add_argument("--model", default=None, help="model directory or hub id (default: the config's model.name)")
    p.add_argument("--out", required=True, help="output directory (written whole, via a .partial directory)")
    p.add_argument("--deltas", default=None, help="an edit's deltas.safetensors, applied to --model before training")
    p.add_argument("--weights", choices=("full", "blocks"), default="full",
                   help="full FT: save the whole model, or only the trained parameters (blocks.safetensors)")
    p.add_argument("--ds", action="store_true", help="also measure downstream accuracy before and after")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party chatter at INFO hides our own progress lines.
    for noisy in ("transformers", "datasets", "filelock", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-load "Loading weights" bars drown our own progress lines
    if args.command is None:
        parser.print_help()
        return 2
    previous = _sigterm_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except EditDecayError as err:
        print(f"editdecay: error: {err}", file=sys.stderr)
        return err.exit_code
    except Terminated as err:
        print(f"editdecay: terminated (SIGTERM){_killed_runs(err)}", file=sys.stderr)
        return 143
    except KeyboardInterrupt as err:
        print(f"editdecay: interrupted{_killed_runs(err)}", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"editdecay: error: disk full writing {err.filename or 'a file'} ({err.strerror}); free space "
                  "or point cache_dir / --out / the tracking store at another disk", file=sys.stderr)
            return 1
        raise
    except Exception as err:
        if "No space left on device" in str(err):  # safetensors and others wrap ENOSPC in their own errors
            print(f"editdecay: error: disk full ({str(err).splitlines()[0]}); free space or point cache_dir / "
                  "--out / the tracking store at another disk", file=sys.stderr)
            return 1
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _killed_runs(err: KeyboardInterrupt) -> str:
    """The MLflow runs the interruption ended KILLED (tracking/runs.py records them on the
    exception), to name in the message; nothing where the command tracks no run."""
    runs = getattr(err, "killed_runs", [])
    if not runs:
        return ""
    return f"; MLflow run{'s' if len(runs) > 1 else ''} {', '.join(runs)} ended KILLED"


def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) in the main thread, so one path —
    the one Ctrl-C takes — ends runs KILLED and removes temporary files. Returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
