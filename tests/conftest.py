"""Shared fixtures. The toy model is expensive: it is built once per machine and cached on disk,
keyed by the hash of its world + model config (``editdecay.world.toy.toy_key``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Vendored real data (data/zsre/README.md): tests read only files inside the repository.
ZSRE_SAMPLE = REPO / "data" / "zsre" / "zsre_sample.json"
TEST_CACHE = Path(os.environ.get("EDITDECAY_TEST_CACHE", REPO / ".cache" / "editdecay-test"))


@pytest.fixture(scope="session")
def tiny_cfg():
    from editdecay.config import load_config

    return load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={TEST_CACHE}"])


@pytest.fixture(scope="session")
def toy_model_dir(tiny_cfg) -> Path:
    from editdecay.world.toy import ensure_toy_model

    return ensure_toy_model(tiny_cfg)


@pytest.fixture(scope="session")
def toy_world(tiny_cfg):
    from editdecay.world.facts import World

    return World(tiny_cfg.world)


@pytest.fixture()
def toy_model(toy_model_dir):
    """A fresh copy per test (tests may edit weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(toy_model_dir)
    model.eval()
    return model, AutoTokenizer.from_pretrained(toy_model_dir)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (sqlite + proxied artifacts), stopped at the end."""
    from editdecay.tracking.server import start_server, stop_server

    root = tmp_path_factory.mktemp("mlflow-server")
    proc, url = start_server(root, port=free_port(), log_file=root / "server.log")
    yield url
    stop_server(proc)
