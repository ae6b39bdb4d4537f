"""The capacity decision: run now, queue for the autoscaler, or refuse (no Ray needed)."""

from __future__ import annotations

import pytest
import yaml

from editdecay.errors import ConfigError
from editdecay.sweep.capacity import decide, load_autoscaler_config

from conftest import REPO

TRIAL = {"CPU": 8.0, "GPU": 1.0}
EMPTY_HEAD = {"CPU": 0.0, "memory": 3e10}  # an autoscaling cluster before its first worker: head with CPU: 0


def launcher_config(gpu_worker: dict) -> dict:
    return {"max_workers": 8, "head_node_type": "head",
            "available_node_types": {"head": {"resources": {"CPU": 0}, "max_workers": 0}, "gpu_worker": gpu_worker}}


def test_fits_now_runs():
    assert decide(TRIAL, {"CPU": 16.0, "GPU": 2.0}, None).action == "run"


def test_zero_gpus_now_but_workers_can_add_them_queues():
    cfg = launcher_config({"min_workers": 0, "max_workers": 4, "resources": {"CPU": 96, "GPU": 8}})
    verdict = decide(TRIAL, EMPTY_HEAD, cfg, "sweep paper.yaml")
    assert verdict.action == "queue"
    assert "up to 32 GPUs" in verdict.message and "gpu_worker" in verdict.message and "\n" not in verdict.message


def test_node_type_without_declared_resources_queues_with_a_hint():
    # sweeps/cluster/aws-gpu.yaml without its declared resources: AWS fills in a p4de's GPUs at launch.
    cfg = yaml.safe_load((REPO / "sweeps" / "cluster" / "aws-gpu.yaml").read_text())
    assert decide(TRIAL, EMPTY_HEAD, cfg).action == "queue"  # as shipped: 8 GPUs per worker declared
    del cfg["available_node_types"]["gpu_worker"]["resources"]
    verdict = decide(TRIAL, EMPTY_HEAD, cfg)
    assert verdict.action == "queue" and "declare no resources" in verdict.message


def test_more_than_the_autoscaler_can_ever_reach_refuses():
    cfg = launcher_config({"min_workers": 0, "max_workers": 2, "resources": {"CPU": 8, "GPU": 1}})
    verdict = decide({"CPU": 8.0, "GPU": 4.0}, EMPTY_HEAD, cfg, "sweep big.yaml", single_node=False)
    assert verdict.action == "refuse"
    assert "4 GPUs per trial" in verdict.message and "max_workers" in verdict.message


def test_no_autoscaler_refuses_as_before():
    verdict = decide(TRIAL, {"CPU": 2.0}, None, "sweep x.yaml")
    assert verdict.action == "refuse" and "resources.cpu" in verdict.message


def test_cluster_wide_max_workers_caps_node_types():
    cfg = launcher_config({"min_workers": 0, "max_workers": 100, "resources": {"CPU": 8, "GPU": 1}})
    cfg["max_workers"] = 2
    # A placement group (trial + workers) may span nodes: 2 x 1 GPU reach 2 GPUs, not 3.
    assert decide({"CPU": 8.0, "GPU": 3.0}, EMPTY_HEAD, cfg, single_node=False).action == "refuse"
    assert decide({"CPU": 8.0, "GPU": 2.0}, EMPTY_HEAD, cfg, single_node=False).action == "queue"
    # One process needs one node with both GPUs.
    assert decide({"CPU": 8.0, "GPU": 2.0}, EMPTY_HEAD, cfg).action == "refuse"


def test_bad_autoscaler_config_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no available_node_types"):
        load_autoscaler_config(tmp_path / "x.yaml") if (tmp_path / "x.yaml").write_text("a: 1\n") else None
    with pytest.raises(ConfigError, match="cannot read it"):
        load_autoscaler_config(tmp_path / "missing.yaml")
