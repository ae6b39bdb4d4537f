"""The ``editdecay`` command line.

Every command takes ``[CONFIG] [key=value ...]``: an optional YAML trial config, then dotted
overrides (``edit.method=alphaedit``), before or after the options. ``--overrides "a=1 b=2"`` takes
them as one string too, which is how ``MLproject`` entry points pass them. User errors (a bad
argument included: every number is range-checked by the parser) print one line and exit 2;
SIGINT exits 130, SIGTERM 143.
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


class UsageError(EditDecayError):
    """A command-line argument the parser rejects (one line, exit 2, like every user error)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (``editdecay: error: ...``) and exit 2 via
    :class:`UsageError`, not a usage block and ``SystemExit``: ``main([...])`` returns it in-process too."""

    def error(self, message: str):
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _int_in(low: int, high: int | None = None):
    """An argparse type: an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: "
                                             + (f"{low}..{high}" if high is not None else f"{low} or more"))
        return value

    parse.__name__ = "integer"
    return parse


def _positive_seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range; give a positive number of seconds")
    return value


def _deltas_file(text: str) -> str:
    """``--deltas``: a whole safetensors file (header and data all there), checked before any model loads."""
    import struct

    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text} does not exist; give the deltas.safetensors an `editdecay edit --out` wrote")
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a file; give the deltas.safetensors inside an edit output directory")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            header = json.loads(f.read(n)) if 0 < n <= min(size - 8, 100_000_000) else None
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {text} ({err.strerror}); fix its permissions") from None
    except ValueError:
        header = None
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2] if isinstance(header, dict) else []
    if not ends or not all(isinstance(e, int) for e in ends) or 8 + n + max(ends) != size:
        what = "empty" if size == 0 else "truncated or not a safetensors file"
        raise argparse.ArgumentTypeError(f"{text} is {what}; run `editdecay edit` again to rewrite its deltas.safetensors")
    return text


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

    from editdecay.preflight import check_model

    cfg = _config_and_overrides(args)
    check_model(cfg.model.name, cfg)  # a damaged .gguf, a BERT directory: one line before any conversion
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
    """Run an MLflow tracking server (sqlite or a database backend, proxied artifacts) in the foreground,
    restarted if it dies after serving, one copy per --root."""
    from editdecay.tracking import redact_uri
    from editdecay.tracking.server import (check_root, check_store_options, health_url_for, serve_foreground,
                                           server_command, server_env)

    root = Path(args.root)
    backend, artifacts = args.backend_store_uri or None, args.artifacts_destination or None
    check_store_options(backend, artifacts)
    check_root(root)
    _check_port_free(args.host, args.port)
    store = redact_uri(backend) if backend else f"{root.resolve()}/mlflow.db"
    print(f"editdecay server: http://{args.host}:{args.port}  (store {store}, artifacts "
          f"{artifacts or f'{root.resolve()}/artifacts'})\n  clients: export MLFLOW_TRACKING_URI=http://{args.host}:{args.port}",
          flush=True)
    code = serve_foreground(server_command(root, args.host, args.port, args.workers,
                                           [h for h in args.allowed_hosts.split(",") if h], backend, artifacts),
                            root=root.resolve(), env=server_env(backend), health_url=health_url_for(args.host, args.port))
    if code in (128 + signal.SIGHUP, 128 + signal.SIGINT, 128 + signal.SIGTERM):  # we were asked to stop
        return code
    # It only ends by a signal: by itself (even with status 0) it failed (bind, store); its log above says why.
    err = EditDecayError(f"the MLflow server on {args.host}:{args.port} stopped by itself (status {code}; its log "
                         "above says why: port in use, store unreadable, ...)")
    err.exit_code = 1
    raise err


def _check_port_free(host: str, port: int) -> None:
    """A busy port or an address that is not this machine's fails here, with exit 2; uvicorn would log
    the bind error and exit 0."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise EditDecayError(f"--host {host}: cannot resolve it ({err.strerror}); give an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a TIME_WAIT port is free
        try:
            s.bind(address)
        except OSError as err:
            raise EditDecayError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror}); stop whatever "
                                 "uses it or choose another --port") from None


def cmd_trial(args: argparse.Namespace) -> int:
    """One tracked trial: base → edit → fine-tune → evaluate → survival, logged to MLflow."""
    from editdecay.preflight import check_trial_inputs

    cfg = _config_and_overrides(args)
    check_trial_inputs(cfg)  # before torch, MLflow or any run exists
    experiment = _mlflow_run_experiment(cfg.tracking.uri, cfg.tracking.experiment)
    if experiment:
        args.overrides = f"{args.overrides or ''} tracking.experiment={shlex.quote(experiment)}"
        cfg = _config_and_overrides(args)
    from editdecay.pipeline.trial import GROUPS, run_trial
    from editdecay.tracking import redact_uri, resolve_tracking_uri

    result = run_trial(cfg, force=args.force)
    print(f"editdecay trial '{cfg.name}': run {result.run_id} in experiment '{cfg.tracking.experiment}' "
          f"({redact_uri(resolve_tracking_uri(cfg.tracking.uri))}), {result.seconds:.0f} s")
    print("\n".join(trial_summary(result.metrics, GROUPS, result.native_missing)))
    print(f"  stages   built: {', '.join(result.cache_misses) or '-'}   reused: {', '.join(result.cache_hits) or '-'}")
    return 0


def _mlflow_run_experiment(uri: str | None, configured: str) -> str | None:
    """Under ``mlflow run``, the experiment its run is in when that differs from the configured one:
    the command then logs there, into that run, instead of leaving it empty (one command, one run)."""
    if not os.environ.get("MLFLOW_RUN_ID"):
        return None
    from editdecay.tracking import resolve_tracking_uri
    from editdecay.tracking.runs import project_run_experiment

    experiment = project_run_experiment(resolve_tracking_uri(uri))
    if not experiment or experiment == configured:
        return None
    print(f"editdecay: logging into the run `mlflow run` made, in its experiment '{experiment}' (configured: "
          f"'{configured}'; `mlflow run ... --experiment-name {configured}` logs there)", file=sys.stderr, flush=True)
    return experiment


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

    from editdecay.preflight import check_trial_inputs

    cfg = _config_and_overrides(args)
    check_output_dir(args.out)
    check_trial_inputs(cfg, stages={"model", "finetune"} | ({"eval"} if args.ds else set()), model_path=args.model)
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
    finetuned = target is not None and any((target / sub).is_dir() for sub in ("adapter", "merged", "model"))
    from editdecay.preflight import check_trial_inputs

    check_trial_inputs(cfg, stages={"data", "eval"} | (set() if finetuned else {"model"}), model_path=args.model)
    if finetuned:
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

    from editdecay.preflight import check_trial_inputs

    cfg = _config_and_overrides(args)
    check_trial_inputs(cfg, stages={"model", "edit"})
    moments = run_stats(cfg)
    s = cfg.edit.stats
    for layer, C in moments.items():
        print(f"  layer {layer:3d}  C {tuple(C.shape)} {str(C.dtype).removeprefix('torch.')}  trace {float(C.trace()):.4g}")
    print(f"  corpus {s.corpus}, n_samples {s.n_samples}, max_length {s.max_length}; cached under {cfg.cache_dir}/stats")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    """Edit the model with the configured editor; write deltas, per-edit table and metrics to --out."""
    from editdecay.editing.run import run_edit

    from editdecay.preflight import check_trial_inputs

    cfg = _config_and_overrides(args)
    check_output_dir(args.out)
    check_trial_inputs(cfg, stages={"model", "data", "edit", "eval"})
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
    if not args.dry_run and os.environ.get("MLFLOW_RUN_ID"):
        trial = sweep.trials[0].config
        experiment = _mlflow_run_experiment(trial.tracking.uri, trial.tracking.experiment)
        if experiment:
            sweep = load_sweep(args.file, tracking_uri=args.tracking_uri, experiment=experiment)
    if args.dry_run:  # no Ray, no MLflow, no files: the grid as it would run
        print(f"sweep '{sweep.name}' ({args.file}): {len(sweep.trials)} trials, grid hash {sweep.grid_hash()}, "
              f"resources per trial {sweep.spec.resources.model_dump()}")
        print(trial_table(sweep))
        print(f"{len(sweep.trials)} trials")
        return 0
    from editdecay.paths import default_storage
    from editdecay.sweep.runner import run_sweep, seed_summary_table, summary_table, where_to_look, write_summary

    args.storage = args.storage or default_storage()
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


def parse_margin(text: str | None) -> float | None:
    """``--margin``: an equivalence margin as a difference in rate, 0 < m < 1; '' or absent: none."""
    from editdecay.report.build import check_margin
    from editdecay.tracking.read import ReportInputError

    if text is None or str(text).strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ReportInputError(f"--margin must be a number between 0 and 1 (a difference in rate, e.g. 0.05); "
                               f"got '{text}'") from None
    return check_margin(value)


def cmd_report(args: argparse.Namespace) -> int:
    """Tables, paired tests, plots and report.html for a sweep (or filtered runs), from MLflow only."""
    from editdecay.report import write_report
    from editdecay.tracking.read import ReportInputError, read_experiment, read_sweep

    sweep, experiment = args.sweep or None, args.experiment or None  # MLproject passes '' for "not given"
    margin = parse_margin(args.margin)  # before reading MLflow: a bad margin fails fast
    if not sweep and not experiment:
        raise ReportInputError("give --sweep ID (or a sweep storage dir such as sweep-results/smoke) or --experiment NAME")
    if sweep and args.filter:
        raise ReportInputError(f"--filter goes with --experiment, not --sweep; to filter a sweep's runs use --experiment NAME "
                               f"--filter \"tags.`editdecay.sweep` = '{sweep}' and ...\"")
    check_output_dir(args.out)
    group_by = [k.strip() for k in (args.group_by or "").split(",") if k.strip()]
    if sweep:
        runs = read_sweep(sweep, tracking_uri=args.tracking_uri or None, experiment=experiment)
    else:
        runs = read_experiment(experiment, args.filter or "", tracking_uri=args.tracking_uri or None)
    from editdecay.report.data import select_runs

    select_runs(runs, group_by)  # different configs are never pooled; duplicates are set aside
    result = write_report(runs, args.out, log_to_parent=not args.no_log, margin=margin)
    print(f"editdecay report: {runs.description}: {result.n_usable} of {result.n_runs} runs used, "
          f"{len(result.missing)} trial(s) missing, {result.seconds:.1f} s")
    for line in result.warnings:
        print(f"  {line}")
    for m in result.missing:
        print(f"  missing  {m['trial_id']}: {m['status']}" + (f" ({m['reason']})" if m.get("reason") else ""))
    for t in runs.trials:  # every run read but not used: FAILED, KILLED, duplicates, unreadable results
        if t.problem:
            print(f"  unused   run {t.run_id} ({t.tags.get('editdecay.trial_id', t.name)}, {t.status}): {t.problem}")
    if result.logged_to:
        print(f"  logged as artifacts report/ of run {result.logged_to}")
    print(f"report: {result.html.resolve()}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    """Causal tracing of the MLP at the subject's last token; writes the curve and proposes edit layers."""
    from editdecay.editing.run import edit_records
    from editdecay.editing.trace import propose_layers, trace_mlp
    from editdecay.io import atomic_directory
    from editdecay.models import load_model, resolve_model_path
    from editdecay.preflight import check_trial_inputs

    check_output_dir(args.out)
    cfg = _config_and_overrides(args)
    n = check_trial_inputs(cfg, stages={"model", "data"})  # the model's depth, where known without loading it
    for option, value in (("--n-layers", args.n_layers), ("--window", args.window)):
        if n is not None and value > n:
            raise UsageError(f"{option} {value}: the model has {n} layers; give at most {n}")
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
    parser = Parser(prog="editdecay", description="Do knowledge edits survive fine-tuning?")
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
    p.add_argument("--port", type=_int_in(1, 65535), default=5000)
    p.add_argument("--workers", type=_int_in(1, 256), default=1)
    p.add_argument("--allowed-hosts", default="", help="extra comma-separated names clients use for this server "
                   "(its own names and addresses are allowed automatically with --host 0.0.0.0)")
    p.add_argument("--backend-store-uri", default=os.environ.get("MLFLOW_BACKEND_STORE_URI", ""),
                   help="database for runs, e.g. postgresql://user:pw@host:5432/mlflow (default: MLFLOW_BACKEND_STORE_URI, "
                   "else ROOT/mlflow.db); a store that outlives the machine: docs/sweeps.md")
    p.add_argument("--artifacts-destination", default=os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", ""),
                   help="where proxied artifacts go, e.g. s3://bucket/editdecay (default: MLFLOW_ARTIFACTS_DESTINATION, "
                   "else ROOT/artifacts)")
    p.set_defaults(func=cmd_server)
    p = add("trial", cmd_trial, "run one tracked trial (base, FT-only, KE-only, KE->FT) and log it to MLflow")
    p.add_argument("--force", action="store_true", help="recompute every stage instead of reusing the stage cache")
    add("config", cmd_config, "validate a config and print it resolved, with its hash")
    p = add("trace", cmd_trace, "causal tracing: where the model recalls facts (MLP indirect effect per layer); proposes edit layers")
    p.add_argument("--out", required=True, help="output directory (trace.csv, trace.png, trace.json)")
    p.add_argument("--records", type=_int_in(1), default=50, help="how many edit records to trace (the first N)")
    p.add_argument("--window", type=_int_in(1), default=5, help="consecutive MLP layers restored around each layer")
    p.add_argument("--noise-samples", type=_int_in(1), default=10, help="noise draws per record")
    p.add_argument("--n-layers", type=_int_in(1), default=5, help="how many contiguous layers to propose")
    p = sub.add_parser("sweep", help="run a sweep file's grid of trials with Ray Tune, tracked in MLflow",
                       description="run a sweep file's grid of trials with Ray Tune, tracked in MLflow")
    p.add_argument("file", help="sweep YAML (sweeps/*.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the expanded trial table and its size; start nothing")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep (same --storage)")
    p.add_argument("--fresh", action="store_true", help="discard this sweep's saved state and start over")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--storage", default=None, help="directory for Tune's state and the sweep summary (default: "
                   "sweep-results, or $EDITDECAY_HOME/sweep-results; under a Ray job ~/editdecay-state/sweep-results)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI for every trial (default: the config's)")
    p.add_argument("--max-concurrent", type=_int_in(1), default=None, help="override the sweep file's max_concurrent_trials")
    p.add_argument("--connect-timeout", type=_positive_seconds, default=5.0, help="seconds to wait for a Ray cluster address")
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
    p.add_argument("--group-by", default="", metavar="KEYS",
                   help="runs whose configs differ beyond the table's settings and seed are refused, not pooled; "
                        "'config' makes each config its own row group, or name the config keys that tell them "
                        "apart (e.g. finetune.lr,finetune.max_steps)")
    p.add_argument("--margin", default=None,
                   help="equivalence margin for 'no difference' rows, a difference in rate (e.g. 0.05): adds a TOST")
    p.set_defaults(func=cmd_report)
    p = add("data", cmd_data, "load the configured edit dataset and summarise it")
    p.add_argument("--show", type=_int_in(0), default=2, help="records to print")
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
    p.add_argument("--deltas", type=_deltas_file, default=None, help="an edit's deltas.safetensors, applied to --model before training")
    p.add_argument("--weights", choices=("full", "blocks"), default="full",
                   help="full FT: save the whole model, or only the trained parameters (blocks.safetensors)")
    p.add_argument("--ds", action="store_true", help="also measure downstream accuracy before and after")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except EditDecayError as err:
        print(f"editdecay: error: {err}", file=sys.stderr)
        return err.exit_code
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
    except KeyboardInterrupt as err:
        # Ray Tune catches our Terminated and re-raises a plain KeyboardInterrupt: the signal decides.
        if isinstance(err, Terminated) or _terminated.is_set():
            print(f"editdecay: terminated (SIGTERM){_killed_runs(err)}", file=sys.stderr)
            return 143
        print(f"editdecay: interrupted{_killed_runs(err)}", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            print(f"editdecay: error: disk full writing {err.filename or 'a file'} ({err.strerror}); free space "
                  "or point cache_dir / --out / the tracking store at another disk", file=sys.stderr)
            return 1
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and err.filename:
            print(f"editdecay: error: {err.filename}: {err.strerror}; fix its permissions or write somewhere else "
                  "(--out, cache_dir)", file=sys.stderr)
            return 2
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


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, taking ``key=value`` overrides (and the config file) wherever they stand: after an
    option too (``edit CONFIG --out D key=value``), which argparse alone calls unrecognized."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        options = [x for x in extra if x.startswith("-")]
        if options or not hasattr(args, "args"):
            raise UsageError(f"unrecognized arguments: {' '.join(options or extra)}; see `editdecay "
                             f"{args.command or ''} --help`".replace("editdecay  ", "editdecay "))
        args.args = [*args.args, *extra]
    return args


_terminated = threading.Event()  # SIGTERM arrived during this main() (the exit status is 143 then)


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

    _terminated.clear()

    def handler(signum, frame):
        _terminated.set()
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    raise SystemExit(main())
