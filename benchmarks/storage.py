"""Storage per trial: stage-cache and MLflow-artifact bytes, weight loads, peak RSS, wall time.

    python benchmarks/storage.py                                   # the slice below, both designs
    python benchmarks/storage.py --methods memit --ft lora full --layers edited

A smoke-shaped sweep slice (edit methods × fine-tuning methods × layer selections) on the tiny toy
model. Each trial runs cold in its own process (a fresh stage cache and MLflow store; the layer
statistics are shared through a symlinked ``stats/`` and not counted: both designs compute the same
ones) with MLflow tracking into a sqlite store, once with this checkout ("deltas": the base loaded
once, stages keep deltas / adapters / trained blocks) and once with the commit before it ("copies":
``--old-ref``, extracted with ``git archive``), alternating so drift on the machine falls on both.

Printed per trial: cache bytes / model bytes, MLflow artifact bytes / model bytes, full weight loads
(calls of ``editdecay.models.load_model`` in the trial process), peak RSS of the trial process, wall
time; for full FT also the trained blocks' bytes. Full FT runs without DeepSpeed by default (one CPU
process; ``--deepspeed zero2`` for the preset).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10"]


def tree_bytes(path: Path, skip: tuple[str, ...] = ()) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*")
               if p.is_file() and not p.is_symlink() and not any(s in p.parts for s in skip))


def one_trial(spec: dict) -> None:
    """In the trial's own process: run it tracked, count weight loads, print a JSON line."""
    import resource

    import editdecay.models as models
    from editdecay.config import load_config
    from editdecay.pipeline.trial import run_trial

    loads = []
    real = models.load_model
    models.load_model = lambda *a, **k: loads.append(1) or real(*a, **k)
    cfg = load_config(spec["config"], spec["overrides"])
    t0 = time.perf_counter()
    run_trial(cfg)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss_mb = usage.ru_maxrss / 1024
    # CPU seconds too: on a shared machine wall time follows the other tenants' load.
    print("RESULT " + json.dumps({"seconds": seconds, "loads": len(loads), "rss_mb": rss_mb,
                                  "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)


def run_one(design: str, src: Path, config: str, overrides: list[str], work: Path, stats: Path) -> dict:
    work.mkdir(parents=True)
    (work / "cache").mkdir()
    (work / "cache" / "stats").symlink_to(stats)
    store = f"sqlite:///{work / 'mlflow.db'}"
    spec = {"config": config, "overrides": [f"cache_dir={work / 'cache'}", f"tracking.uri={store}",
                                            "tracking.experiment=storage", *overrides]}
    env = {**os.environ, "PYTHONPATH": str(src), "EDITDECAY_STORAGE_SRC": str(src)}
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], cwd=work, env=env,
                         capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{design} trial failed ({' '.join(overrides)}):\n{out.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["cache_bytes"] = tree_bytes(work / "cache" / "stages")
    result["artifact_bytes"] = tree_bytes(work, skip=("cache",)) - (work / "mlflow.db").stat().st_size
    blocks = list((work / "cache" / "stages" / "finetune").rglob("blocks.safetensors"))
    result["blocks_bytes"] = blocks[0].stat().st_size if blocks else 0
    stage_seconds: dict[str, float] = {}
    for record in (work / "cache" / "stages").glob("*/*/stage.json"):
        info = json.loads(record.read_text())
        stage_seconds[info["stage"]] = stage_seconds.get(info["stage"], 0.0) + info["seconds"]
    result["stage_seconds"] = stage_seconds
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    ap.add_argument("--methods", nargs="+", default=["memit", "alphaedit"])
    ap.add_argument("--ft", nargs="+", default=["lora", "dora", "full"])
    ap.add_argument("--layers", nargs="+", default=["all", "edited"])
    ap.add_argument("--deepspeed", default="none")
    ap.add_argument("--first", choices=("deltas", "copies"), default="deltas", help="which design runs first in pair 0")
    ap.add_argument("--old-ref", default="874cce0", help="the commit of the copying design (main before issue 15)")
    ap.add_argument("--model-cache", default=str(REPO / ".cache" / "editdecay-test"),
                    help="where the toy model is (or gets) built, and the shared layer statistics")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO / "src"))
    from editdecay.config import load_config
    from editdecay.world.toy import ensure_toy_model

    toy = ensure_toy_model(load_config(args.config, [f"cache_dir={args.model_cache}"]))
    model_bytes = sum(p.stat().st_size for p in Path(toy).glob("*.safetensors"))
    stats = Path(args.model_cache) / "stats"
    stats.mkdir(parents=True, exist_ok=True)
    print(f"model {toy}: {model_bytes / 1e6:.2f} MB of weights; designs: deltas (this checkout), copies ({args.old_ref})")
    with tempfile.TemporaryDirectory(prefix="editdecay-storage-") as tmp:
        old = Path(tmp) / "old"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.old_ref, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        designs = {"deltas": REPO / "src", "copies": old / "src"}
        header = (f"{'edit':>9} {'ft':>5} {'layers':>7} {'design':>7} {'cache/model':>11} {'mlflow/model':>12} "
                  f"{'blocks/model':>12} {'loads':>5} {'RSS MB':>7} {'wall s':>7}")
        print(header)
        i = 0
        for method in args.methods:
            for ft in args.ft:
                for layers in args.layers:
                    overrides = [*SMALL, f"model.name={toy}", f"edit.method={method}", f"finetune.method={ft}",
                                 f"finetune.layers={layers}", f"finetune.deepspeed={args.deepspeed}"]
                    order = ("deltas", "copies") if args.first == "deltas" else ("copies", "deltas")
                    for design in (order if i % 2 == 0 else order[::-1]):
                        r = run_one(design, designs[design], args.config, overrides, Path(tmp) / f"t{i}-{design}", stats)
                        print(f"{method:>9} {ft:>5} {layers:>7} {design:>7} {r['cache_bytes'] / model_bytes:11.3f} "
                              f"{r['artifact_bytes'] / model_bytes:12.3f} {r['blocks_bytes'] / model_bytes:12.3f} "
                              f"{r['loads']:5d} {r['rss_mb']:7.0f} {r['seconds']:7.1f}  cpu {r['cpu_s']:.1f}s  "
                              + " ".join(f"{k} {v:.1f}s" for k, v in sorted(r["stage_seconds"].items())), flush=True)
                    i += 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        sys.path.insert(0, os.environ["EDITDECAY_STORAGE_SRC"])
        one_trial(json.loads(sys.argv[2]))
    else:
        main()
