"""Screenshots of what a researcher sees in the MLflow UI, for docs/compare-runs.md.

Starts an MLflow server (``editdecay server``'s), logs two tiny trials (LoRA on all layers and on
the edited layers, configs/tiny.yaml), and screenshots with headless Chromium: the runs table and
the chart view opened on the saved comparison view, and one trial's overview and metric charts.

    python scripts/ui_screenshots.py                       # PNGs into docs/img/
    python scripts/ui_screenshots.py --cache-dir .cache/editdecay --out /tmp/img

Needs ``chromium`` on PATH. Reuses the stage cache: a second run only re-logs and re-shoots.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Small but real (as tests/test_trial.py), so the charts have a few points.
TRIAL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10", "finetune.logging_steps=2"]
EXPERIMENT = "editdecay-ui"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shoot(chromium: str, url: str, out: Path, size: str = "1600,1000") -> None:
    """One PNG of ``url`` after the page's scripts have run (virtual time lets the SPA fetch and render)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", "--virtual-time-budget=25000",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=180)
    print(f"  {out}  <- {url}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "img"), help="directory for the PNGs")
    parser.add_argument("--cache-dir", default=os.environ.get("EDITDECAY_CACHE", str(REPO / ".cache" / "editdecay")))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("ui_screenshots: no chromium on PATH; install it (apt install chromium)", file=sys.stderr)
        return 2

    from mlflow.tracking import MlflowClient

    from editdecay.config import load_config
    from editdecay.pipeline.trial import run_trial
    from editdecay.tracking.server import start_server, stop_server
    from editdecay.tracking.views import view_url

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        proc, url = start_server(Path(root) / "server", port=free_port(), log_file=Path(root) / "server.log")
        try:
            run_ids = []
            for layers in ("all", "edited"):
                cfg = load_config(REPO / "configs" / "tiny.yaml",
                                  [f"cache_dir={args.cache_dir}", *TRIAL, f"finetune.layers={layers}",
                                   f"name=lora-{layers}", f"tracking.uri={url}", f"tracking.experiment={EXPERIMENT}"])
                run_ids.append(run_trial(cfg).run_id)
            exp_id = MlflowClient(url).get_experiment_by_name(EXPERIMENT).experiment_id
            print(f"MLflow UI screenshots from {url}, experiment {exp_id}:")
            shoot(chromium, view_url(url, exp_id), out / "runs-table.png")
            shoot(chromium, view_url(url, exp_id, charts=True), out / "runs-charts.png")
            trial = f"{url}/#/experiments/{exp_id}/runs/{run_ids[-1]}"
            shoot(chromium, trial, out / "trial-overview.png", size="1600,1400")
            shoot(chromium, f"{trial}/model-metrics", out / "trial-metrics.png", size="1600,1400")
        finally:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
