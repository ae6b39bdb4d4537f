"""The z stage (MEMIT/AlphaEdit target vectors) on a real model: time, peak memory and edit quality,
with and without early stopping / the token budget, measured in one run.

    python benchmarks/z_stage.py --records 20                       # SmolLM2-135M (configs/smollm2.yaml)
    python benchmarks/z_stage.py --config configs/toy.yaml --records 100
    python benchmarks/z_stage.py --records 50 --variants stop        # the issue's 50-edit figure

Each variant runs in its own process (peak RSS is per process) on the same records, the same
context templates and the same layer statistics (computed first, once, and cached):

    full   every request runs every z step, all requests in one forward/backward (z_stop_loss 0,
           no token budget): the compute and memory of the code before early stopping dropped
           converged requests (that code stopped their updates at loss < 5e-2 but kept them in
           the batch, so its z equals `stop`'s and its cost `full`'s)
    stop   the defaults: a request leaves the batch once its loss is below 5e-2 (the reference's
           early stop); chunks of at most z_max_tokens padded tokens (2048)

Per variant: z wall and CPU seconds, RSS before z and its peak during z (sampled every 0.1 s
with psutil), the mean steps a request took, and ES/PS/NS after MEMIT with that z. The `uptime`
load is printed: the machine is shared, compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "full": ["edit.z_stop_loss=0", "edit.z_max_tokens=1000000000"],
    "stop": [],
}


def load(args, extra: list[str]):
    from editdecay.config import load_config

    overrides = [f"edit.num_edits={args.records}", *args.overrides, *extra]
    if args.steps is not None:
        overrides.append(f"edit.v_num_grad_steps={args.steps}")
    return load_config(REPO / args.config, overrides)


class RssSampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.1):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


def child(args) -> dict:
    import psutil

    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.memit import MemitSession, compute_zs
    from editdecay.editing.run import edit_records, load_for_editing
    from editdecay.editing.stats import second_moments
    from editdecay.metrics.edit import evaluate_edits

    cfg = load(args, VARIANTS[args.child])
    records = edit_records(cfg)
    model, tokenizer = load_for_editing(cfg)
    hp = resolve_hparams(model, cfg.edit)
    moments = second_moments(model, tokenizer, cfg, list(hp.layers), progress=False)  # cached by the parent
    session = MemitSession(model, tokenizer, hp, moments)
    rss_before = psutil.Process().memory_info().rss
    sampler = RssSampler()
    sampler.start()
    cpu, wall = time.process_time(), time.perf_counter()
    targets = compute_zs(model, tokenizer, records, hp, session.templates)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = sampler.stop()
    session.edit(records, targets)
    after = evaluate_edits(model, tokenizer, records, batch_size=cfg.eval.batch_size).summary
    return {"variant": args.child, "z_wall": wall, "z_cpu": cpu, "rss_before": rss_before, "rss_peak": peak,
            **{k: v for k, v in targets[1].items()}, **{k: after[k] for k in ("es", "ps", "ns")}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/smollm2.yaml")
    ap.add_argument("--records", type=int, default=20)
    ap.add_argument("--steps", type=int, default=None, help="edit.v_num_grad_steps (default: the row's)")
    ap.add_argument("--variants", default="full,stop")
    ap.add_argument("--parallel", action="store_true", help="run the variants at the same time (a loaded machine)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    import torch

    from editdecay.editing.hparams import resolve_hparams
    from editdecay.editing.run import edit_records, load_for_editing
    from editdecay.editing.stats import second_moments
    from editdecay.metrics.edit import evaluate_edits

    cfg = load(args, [])
    records = edit_records(cfg)
    model, tokenizer = load_for_editing(cfg)
    hp = resolve_hparams(model, cfg.edit)
    t = time.perf_counter()
    second_moments(model, tokenizer, cfg, list(hp.layers), progress=False)
    t_stats = time.perf_counter() - t
    base = evaluate_edits(model, tokenizer, records, batch_size=cfg.eval.batch_size).summary
    del model
    print(f"{cfg.model.name}: {len(records)} {cfg.data.source} edits, z layer {max(hp.layers)} of layers {list(hp.layers)}, "
          f"{hp.v_num_grad_steps} z steps, {hp.n_context_templates} templates, torch threads {torch.get_num_threads()}, "
          f"stats {t_stats:.0f} s (cached after the first run)")
    print(f"load before: {os.getloadavg()[0]:.2f} (1-min), {os.cpu_count()} CPUs")
    print(f"{'variant':<8} {'z wall s':>9} {'z CPU s':>8} {'RSS before':>11} {'peak in z':>10} {'steps':>6} "
          f"{'stopped':>8} {'chunks':>6} {'ES':>6} {'PS':>6} {'NS':>6}")
    print(f"{'base':<8} {'':>9} {'':>8} {'':>11} {'':>10} {'':>6} {'':>8} {'':>6} {base['es']:6.1%} {base['ps']:6.1%} {base['ns']:6.1%}")
    results = []
    names = args.variants.split(",")
    cmds = [[sys.executable, __file__, "--child", name, "--config", args.config, "--records", str(args.records),
             *(["--steps", str(args.steps)] if args.steps is not None else []), *args.overrides] for name in names]
    if args.parallel:  # on a shared machine: both variants see the same load (compare CPU seconds, not wall)
        procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
        outputs = [(p.communicate(), p.returncode) for p in procs]
    else:
        outputs = []
        for c in cmds:
            p = subprocess.run(c, capture_output=True, text=True)
            outputs.append(((p.stdout, p.stderr), p.returncode))
    for name, ((stdout, stderr), rc) in zip(names, outputs):
        line = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
        if rc != 0 or not line:
            print(f"{name}: failed (exit {rc})\n{stderr[-3000:]}")
            continue
        r = json.loads(line[-1][len("RESULT "):])
        results.append(r)
        gb = 1024 ** 3
        print(f"{name:<8} {r['z_wall']:9.1f} {r['z_cpu']:8.1f} {r['rss_before'] / gb:9.2f}GB {r['rss_peak'] / gb:8.2f}GB "
              f"{r['z.steps']:6.1f} {r['z.converged']:8.0%} {r['z.chunks']:6.0f} {r['es']:6.1%} {r['ps']:6.1%} {r['ns']:6.1%}",
              flush=True)
    if len(results) == 2:
        a, b = results
        print(f"{b['variant']} / {a['variant']}: z wall {b['z_wall'] / a['z_wall']:.2f}x, z CPU {b['z_cpu'] / a['z_cpu']:.2f}x, "
              f"peak RSS {b['rss_peak'] / a['rss_peak']:.2f}x")
    print(f"load after: {os.getloadavg()[0]:.2f} (1-min)")


if __name__ == "__main__":
    main()
