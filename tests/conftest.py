"""Shared fixtures. The toy model is expensive: it is built once per machine and cached on disk,
keyed by the hash of its world + model config (``editdecay.world.toy.toy_key``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ZSRE_SAMPLE = SHARED / "data" / "zsre_sample.json"
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
