"""Can the Ray cluster hold one trial, now or once its autoscaler has added workers?

An autoscaling cluster (``min_workers: 0``, a head with ``CPU: 0``) starts with no GPUs: refusing
because ``ray.cluster_resources()`` shows 0 GPUs would make such a cluster unusable. So the
decision is three-way: **run** (it fits now), **queue** (it does not fit now, but the autoscaler's
node types can supply it, or may: a node type whose resources the config leaves to the cloud
provider to detect) and **refuse** (it can never fit: bad input, one line).

The autoscaler's config comes from ``--autoscaler-config`` (the cluster launcher YAML), else the
one the launcher leaves on the head (``~/ray_bootstrap_config.yaml``, where ``ray job submit``
runs the driver), else what Ray's GCS reports (autoscaler v2). :func:`decide` is pure, so it is
unit-tested with config dicts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from editdecay.errors import ConfigError

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
UNLIMITED = math.inf


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float] | None  # None: not declared (the cloud provider fills them in at launch)
    max_workers: float


@dataclass(frozen=True)
class Capacity:
    action: Literal["run", "queue", "refuse"]
    message: str


def node_types(autoscaler: dict[str, Any]) -> list[NodeType]:
    """Worker node types of a cluster launcher config (``available_node_types``), head excluded."""
    head = autoscaler.get("head_node_type")
    cluster_max = autoscaler.get("max_workers", UNLIMITED)
    types = []
    for name, spec in (autoscaler.get("available_node_types") or {}).items():
        if name == head:
            continue
        limit = spec.get("max_workers", cluster_max)
        limit = UNLIMITED if limit is None or limit < 0 else min(limit, cluster_max)
        if limit <= 0:
            continue
        res = spec.get("resources")
        types.append(NodeType(name, {k: float(v) for k, v in res.items()} if res is not None else None, limit))
    return types


def decide(need: dict[str, float], have: dict[str, float], autoscaler: dict[str, Any] | None,
           what: str = "the sweep", single_node: bool = True) -> Capacity:
    """``need``: one trial's total resources (``{"CPU": 8, "GPU": 1}``); ``have``: the cluster's now.
    ``single_node``: the trial is one process (no placement-group workers), so one node must hold it all."""
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short:
        return Capacity("run", "")
    now = ", ".join(f"{v:g} {k}s per trial but the Ray cluster has {have.get(k, 0.0):g}" for k, v in short.items())
    types = node_types(autoscaler) if autoscaler else []
    if single_node:
        types = [t for t in types if t.resources is None or all(t.resources.get(k, 0.0) + 1e-9 >= v
                                                                 for k, v in need.items() if v)]
    if not types:
        kind = next(iter(short))
        return Capacity("refuse", f"{what}: resources ask for {now}, and no autoscaler can add a node that holds "
                                  f"one trial; lower "
                                  f"resources.{kind.lower()} (or workers), add nodes, or pass --autoscaler-config "
                                  "for a cluster that scales")
    unknown = [t.name for t in types if t.resources is None]
    reach = {k: have.get(k, 0.0) + sum(t.max_workers * (t.resources or {}).get(k, 0.0) for t in types)
             for k in short}
    if all(reach[k] + 1e-9 >= v for k, v in short.items()):
        adds = ", ".join(f"up to {_count(reach[k])} {k}s" for k in short)
        return Capacity("queue", f"{what}: resources ask for {now} now; its autoscaler can grow it to {adds} "
                                 f"(node types {', '.join(t.name for t in types if t.resources is not None)}): "
                                 "trials wait for workers to join")
    if unknown:
        return Capacity("queue", f"{what}: resources ask for {now} now; node types {', '.join(unknown)} declare no "
                                 "resources (the cloud provider sets them at launch), so trials wait for workers to "
                                 "join; declare `resources:` in the cluster YAML to have this checked up front")
    kind = next(k for k, v in short.items() if reach[k] + 1e-9 < v)
    return Capacity("refuse", f"{what}: resources ask for {need[kind]:g} {kind}s per trial but the Ray cluster has "
                              f"{have.get(kind, 0.0):g} and its autoscaler can reach only {_count(reach[kind])}; "
                              f"lower resources.{kind.lower()} or raise max_workers / the node types' resources")


def _count(value: float) -> str:
    return "unlimited" if value == UNLIMITED else f"{value:g}"


def load_autoscaler_config(path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The launcher YAML at ``path``; else the head's bootstrap copy if present; else None."""
    if path is None:
        default = Path(BOOTSTRAP_CONFIG).expanduser()
        if not default.is_file():
            return None
        path = default
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as err:
        raise ConfigError(f"--autoscaler-config {file}: cannot read it ({err.strerror}); give the cluster "
                          "launcher YAML (e.g. sweeps/cluster/aws-gpu.yaml)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"--autoscaler-config {file}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or "available_node_types" not in data:
        raise ConfigError(f"--autoscaler-config {file}: no available_node_types; give the cluster launcher YAML "
                          "(e.g. sweeps/cluster/aws-gpu.yaml)")
    return data


def reported_autoscaler_config() -> dict[str, Any] | None:
    """What the connected cluster's GCS says its autoscaler can launch (autoscaler v2), as a launcher-style
    dict; None where Ray reports nothing (a cluster started with ``ray start`` and no autoscaler)."""
    try:
        from ray._private.state import state  # no public API for this in Ray 2.60

        config = state.get_cluster_config()
    except Exception:  # older GCS, autoscaler v1, not connected: nothing reported
        return None
    if config is None or not config.node_group_configs:
        return None
    types = {}
    for group in config.node_group_configs:
        limit = group.max_count
        types[group.name] = {"resources": dict(group.resources), "max_workers": -1 if limit == -1 else limit}
    return {"available_node_types": types}
