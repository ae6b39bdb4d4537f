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
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Small but real (as tests/test_trial.py), so the charts have a few points.
TRIAL = ["edit.num_edits=20", "finetune.max_steps=12", "finetune.curve_every=4", "eval.ds_max_examples=40",
         "tracking.curve_edits=10", "finetune.logging_steps=2"]
EXPERIMENT = "editdecay-ui"
# The charts the comparison is about: survival, the decay curve, DS accuracy and the training curves
# of both fine-tuning stages (KE->FT and FT-only).
CHARTS = "^survival.efr$|^curve.es$|^(ft|ftonly).ds.acc$|^(ft|ftonly).train.(loss|lr)$"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The UI keeps these in localStorage (key_v<version>, JSON): the Model training side of the sidebar,
# and the assistant panel closed (it opens by itself on a first visit and covers a third of the page).
UI_SETTINGS = {"mlflow.workflowType_v1": '"machine_learning"', "mlflow.assistant.panelOpen_v1": "false",
               "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true"}


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3
    in, fd 4 out, NUL-terminated JSON), so no websocket library is needed: set the UI's localStorage,
    wait for the page to render in real time, and capture it."""

    def __init__(self, binary: str, profile: str) -> None:
        to_chrome_r, self._out = os.pipe()
        self._in, from_chrome_w = os.pipe()

        def child_fds() -> None:  # the pipe ends become fds 3 and 4 in the child
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
                                     pass_fds=(3, 4), preexec_fn=child_fds, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._next_id, self._buffer = 0, b""

    def send(self, method: str, session: str | None = None, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def screenshot(self, url: str, out: Path, width: int, height: int, settle: float = 8.0,
                   search: tuple[str, str] | None = None) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=False)
        origin = url.split("/#", 1)[0]
        self.send("Page.navigate", session, url=origin + "/")
        time.sleep(6)  # after the app's own first-visit writes (it opens the assistant once)
        script = "".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in UI_SETTINGS.items())
        self.send("Runtime.evaluate", session, expression=script)
        self.send("Page.navigate", session, url=url)
        time.sleep(settle)  # the SPA fetches runs and metric histories, then draws the charts
        if search:  # (box placeholder, text): typed like a person would, so the page's own filter runs
            placeholder, text = search
            self.send("Runtime.evaluate", session,
                      expression=f"document.querySelector('input[placeholder=\"{placeholder}\"]').focus()")
            self.send("Input.insertText", session, text=text)
            time.sleep(settle)
        data = self.send("Page.captureScreenshot", session, format="png")["data"]
        out.write_bytes(base64.b64decode(data))
        self.send("Target.closeTarget", targetId=target)
        print(f"  {out}  <- {url}")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


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
            browser = Chromium(chromium, str(Path(root) / "chromium-profile"))
            try:
                # A first visit opens the assistant panel by itself: take it on a throwaway shot.
                browser.screenshot(view_url(url, exp_id), Path(root) / "first-visit.png", 1200, 600)
                browser.screenshot(view_url(url, exp_id), out / "runs-table.png", 2400, 560)
                browser.screenshot(view_url(url, exp_id, charts=True), out / "runs-charts.png", 1800, 1350,
                                   search=("Search metric charts", CHARTS))
                trial = f"{url}/#/experiments/{exp_id}/runs/{run_ids[-1]}"
                browser.screenshot(trial, out / "trial-overview.png", 1600, 1300,
                                   search=("Search parameters", "resolved"))
                browser.screenshot(f"{trial}/model-metrics", out / "trial-metrics.png", 1600, 1300, settle=12.0,
                                   search=("Search metric charts", CHARTS))
            finally:
                browser.close()
        finally:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
