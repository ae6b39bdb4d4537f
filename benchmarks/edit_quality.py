"""Edit quality on the default toy model: MEMIT and AlphaEdit at 100 and 1,000 batch edits.

    python benchmarks/edit_quality.py                     # configs/toy.yaml, ~5-10 min on 2 cores
    python benchmarks/edit_quality.py --counts 100 --methods memit

For each editor and batch size: ES / PS / NS before and after editing (CounterFact-style, mean
per-token NLL comparison as in the ROME/MEMIT evaluation), the NS drop in points, and wall time.
The model is the trained toy model (it must know its facts for these numbers to mean anything),
rebuilt from disk for every row so rows do not interact.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from editdecay.config import load_config  # noqa: E402
from editdecay.editing.hparams import resolve_hparams  # noqa: E402
from editdecay.editing.registry import get_editor, run_edits  # noqa: E402
from editdecay.editing.stats import second_moments  # noqa: E402
from editdecay.metrics.edit import evaluate_edits  # noqa: E402
from editdecay.world.facts import World  # noqa: E402
from editdecay.world.toy import ensure_toy_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "toy.yaml"))
    ap.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--methods", nargs="+", default=["memit", "alphaedit"])
    ap.add_argument("overrides", nargs="*", help="extra config overrides, key=value")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_cfg = load_config(args.config, args.overrides)
    model_dir = ensure_toy_model(base_cfg)
    records = World(base_cfg.world).counterfact_records()
    print(f"# edit quality: {base_cfg.name} toy model ({model_dir.name}), {len(records)} world facts")
    print(f"{'method':>10} {'edits':>6} {'ES':>13} {'PS':>13} {'NS':>13} {'NS drop':>8} {'edit s':>7}")
    for method in args.methods:
        for n in args.counts:
            if n > len(records):
                print(f"{method:>10} {n:6d}  skipped: the world has {len(records)} facts")
                continue
            cfg = load_config(args.config, [*args.overrides, f"edit.method={method}", f"edit.num_edits={n}"])
            model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
            tok = AutoTokenizer.from_pretrained(model_dir)
            batch = records[:n]
            hp = resolve_hparams(model, cfg.edit)
            moments = second_moments(model, tok, cfg, list(hp.layers), progress=False)
            before = evaluate_edits(model, tok, batch, cfg.eval.batch_size).summary
            t0 = time.perf_counter()
            run_edits(get_editor(method, hp), model, tok, batch, moments, cfg.edit.chunk_size)
            seconds = time.perf_counter() - t0
            after = evaluate_edits(model, tok, batch, cfg.eval.batch_size).summary
            cells = " ".join(f"{before[m]:5.1%}->{after[m]:6.1%}" for m in ("es", "ps", "ns"))
            print(f"{method:>10} {n:6d} {cells} {100 * (before['ns'] - after['ns']):8.1f} {seconds:7.1f}", flush=True)


if __name__ == "__main__":
    main()
