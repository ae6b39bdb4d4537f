"""The ``editdecay`` command line.

Every command takes ``[CONFIG] [key=value ...]``: an optional YAML trial config, then dotted
overrides (``edit.method=alphaedit``). ``--overrides "a=1 b=2"`` takes them as one string too,
which is how ``MLproject`` entry points pass them. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from editdecay import __version__
from editdecay.errors import EditDecayError

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
    """Build (or reuse) the fact world and toy model; print how well it recalls its facts."""
    from editdecay.world.toy import ensure_toy_model, read_report, toy_dir

    cfg = _config_and_overrides(args)
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


def cmd_config(args: argparse.Namespace) -> int:
    """Validate a config and print it resolved (defaults filled, overrides applied) with its hash."""
    from editdecay.config import stable_hash, to_yaml

    cfg = _config_and_overrides(args)
    print(f"# config hash {stable_hash(cfg)}")
    print(to_yaml(cfg), end="")
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
    written = export_world(cfg.world, Path(args.out))
    for name, path in written.items():
        print(f"  {name:18s} {path}")
    return 0


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
    add("config", cmd_config, "validate a config and print it resolved, with its hash")
    p = add("data", cmd_data, "load the configured edit dataset and summarise it")
    p.add_argument("--show", type=int, default=2, help="records to print")
    p = add("world", cmd_world, "export the fact world's datasets to a directory")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
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
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EditDecayError as err:
        print(f"editdecay: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("editdecay: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
