"""Sweep files: a base trial config plus axes, expanded into a validated list of trials.

A sweep file (``sweeps/*.yaml``)::

    name: smoke                      # the sweep's name: Tune's experiment dir, MLflow run name/tag
    base: ../configs/toy.yaml        # a trial config file (relative to the sweep file) ...
    overrides: {edit.num_edits: 20}  # ... plus dotted overrides applied to every trial
    axes:                            # the grid: the cartesian product of the axes, in this order
      edit.method: [memit, alphaedit]          # a dotted config key and its values
      model:                                    # a named axis: label -> dotted overrides
        gpt2-xl: {model.name: gpt2-xl, finetune.data.template: qa}
    exclude:                         # drop grid points matching every key of an entry
      - {finetune.method: none, finetune.layers: [edited, non_edited]}   # a list: any of these
    include:                         # extra trials: base + overrides + these values
      - {edit.method: memit, finetune.method: lora, edit.num_edits: 50}
    seeds: [0, 1]                    # the trial seed (``seed``): one more axis, applied last
    resources: {cpu: 1, gpu: 0}      # per trial; ``workers``: a placement group (see Resources)
    max_concurrent_trials: 2
    max_failures: 1                  # Tune retries a failing trial this many times

Why we expand the grid ourselves instead of handing Tune one ``grid_search`` per axis: exclusions
and inclusions make the grid irregular, which a cartesian product cannot express, and we need the
exact list (with stable ids and config hashes) before anything starts — for ``--dry-run``, to
validate every trial up front (a typo in trial 37 fails now, in one line, not after an hour), and
to detect a sweep file that changed before ``--resume``. Tune then gets one ``grid_search`` over
the expanded trial list, so it still owns scheduling, retries and restore.

This module imports neither Ray nor MLflow: ``--dry-run`` touches nothing.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from editdecay.config import TrialConfig, check_keys, read_yaml, set_dotted, stable_hash, validate_config
from editdecay.errors import ConfigError

Scalar = Union[str, int, float, bool, None]
AxisValues = Union[list[Any], dict[str, dict[str, Any]]]
# Config fields that hold a local path: resolved to absolute in the driver, because Ray Tune runs
# each trial in its own working directory (a relative path would point somewhere else there).
PATH_KEYS = ("data.path", "finetune.data.path", "eval.ds_path", "edit.stats.corpus", "model.name",
             "finetune.deepspeed")


class Resources(BaseModel):
    """What one trial reserves. ``workers`` > 0 makes it a placement group: one bundle of
    ``cpu``/``gpu`` for the trial process plus ``workers`` bundles of ``worker_cpu``/``worker_gpu``
    (for a multi-GPU full fine-tune's worker group), placed with ``strategy``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    workers: int = Field(0, ge=0)
    worker_cpu: float = Field(1, ge=0)
    worker_gpu: float = Field(1, ge=0)
    strategy: str = Field("PACK", pattern="^(PACK|SPREAD|STRICT_PACK|STRICT_SPREAD)$")

    def total_gpus(self) -> float:
        return self.gpu + self.workers * self.worker_gpu

    def total_cpus(self) -> float:
        return self.cpu + self.workers * self.worker_cpu

    def threads(self) -> int:
        """torch threads for the trial process: its CPUs, at least one."""
        return max(1, int(self.cpu))


class SweepFile(BaseModel):
    """The sweep file as written (before expansion). Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    base: str | None = None
    overrides: dict[str, Any] = {}
    axes: dict[str, AxisValues] = {}
    exclude: list[dict[str, Any]] = []
    include: list[dict[str, Any]] = []
    seeds: list[int] | None = None
    resources: Resources = Resources()
    max_concurrent_trials: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=0)
    experiment: str | None = None  # MLflow experiment of the sweep and its trials (default: the base's)

    @model_validator(mode="after")
    def _axes_not_empty(self) -> "SweepFile":
        for axis, values in self.axes.items():
            if len(values) == 0:
                raise ValueError(f"axis '{axis}' has no values; give at least one or remove the axis")
        return self


@dataclass(frozen=True)
class Trial:
    """One expanded trial: its id, the axis values that made it, and its validated config."""

    trial_id: str
    axes: dict[str, str]  # axis name -> value label (tags, tables)
    config: TrialConfig
    config_hash: str


@dataclass
class Sweep:
    file: Path
    spec: SweepFile
    trials: list[Trial] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def axis_names(self) -> list[str]:
        names = list(self.spec.axes)
        extra = [k for t in self.trials for k in t.axes if k not in names]
        return names + list(dict.fromkeys(extra))

    def trial_hashes(self) -> dict[str, str]:
        return {t.trial_id: t.config_hash for t in self.trials}

    def grid_hash(self) -> str:
        """Hash of the expanded grid (ids and configs, resources): what ``--resume`` compares."""
        return stable_hash({"trials": self.trial_hashes(), "resources": self.spec.resources.model_dump()})


# ------------------------------------------------------------------------------------------------
# Loading


def load_sweep(path: str | os.PathLike, *, tracking_uri: str | None = None, resolve_paths: bool = True,
               experiment: str | None = None) -> Sweep:
    """Read, validate and expand a sweep file; every trial config is validated here.

    ``tracking_uri`` (the CLI's ``--tracking-uri``) replaces every trial's ``tracking.uri``;
    ``experiment`` (under ``mlflow run``: the experiment of its run) the sweep's ``experiment``.
    """
    file = Path(path)
    raw = read_yaml(file)
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"sweep {file}: {_sweep_error(err)}") from None
    if experiment:
        spec = spec.model_copy(update={"experiment": experiment})
    base = _base_config(file, spec)
    if tracking_uri:
        set_dotted(base, "tracking.uri", tracking_uri)
    trials = expand(spec, base, file, resolve_paths=resolve_paths)
    return Sweep(file=file, spec=spec, trials=trials)


def _sweep_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"])
    msg = first["msg"].replace("Value error, ", "")
    if first["type"] == "extra_forbidden":
        return f"unknown key '{loc}'; allowed: {', '.join(SweepFile.model_fields)}"
    return f"'{loc}': {msg}" if loc else msg


def _base_config(file: Path, spec: SweepFile) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    if spec.base:
        base_path = (file.parent / spec.base) if not Path(spec.base).is_absolute() else Path(spec.base)
        if not base_path.is_file() and Path(spec.base).is_file():
            base_path = Path(spec.base)  # relative to the working directory, as a fallback
        if not base_path.is_file():
            raise ConfigError(f"sweep {file}: base config '{spec.base}' not found (relative to the sweep file "
                              f"{file.parent}); fix 'base'")
        raw = read_yaml(base_path)
    for key, value in spec.overrides.items():
        _check_key(file, "overrides", key)
        set_dotted(raw, key, copy.deepcopy(value))
    if spec.experiment:
        set_dotted(raw, "tracking.experiment", spec.experiment)
    return raw


def _check_key(file: Path, where: str, key: str) -> None:
    """An unknown dotted key fails here, naming the sweep field it came from."""
    probe: dict[str, Any] = {}
    set_dotted(probe, key, 0)
    try:
        check_keys(probe, TrialConfig)
    except ConfigError as err:
        raise ConfigError(f"sweep {file}: {where} '{key}': {err}") from None


# ------------------------------------------------------------------------------------------------
# Expansion


def axis_options(spec: SweepFile) -> list[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    """Each axis as (name, [(label, overrides)]): a key axis sets its key, a named axis its mapping."""
    out = []
    for axis, values in spec.axes.items():
        if isinstance(values, dict):
            out.append((axis, [(str(label), dict(over or {})) for label, over in values.items()]))
        else:
            out.append((axis, [(_label(v), {axis: v}) for v in values]))
    if spec.seeds is not None:
        if not spec.seeds:
            raise ConfigError("sweep: 'seeds' is empty; give at least one seed or remove 'seeds'")
        out.append(("seed", [(str(s), {"seed": s}) for s in spec.seeds]))
    return out


def expand(spec: SweepFile, base: dict[str, Any], file: Path, *, resolve_paths: bool = True) -> list[Trial]:
    options = axis_options(spec)
    for axis, opts in options:
        for _, over in opts:
            for key in over:
                _check_key(file, f"axis '{axis}'", key)
    for i, entry in enumerate(spec.exclude):
        unknown = [k for k in entry if k not in dict(options)]
        if unknown:
            raise ConfigError(f"sweep {file}: exclude[{i}] names '{unknown[0]}', which is not an axis; "
                              f"axes: {', '.join(dict(options)) or '(none)'}")
    points: list[tuple[dict[str, str], dict[str, Any]]] = []
    for combo in itertools.product(*(opts for _, opts in options)):
        labels = {axis: label for (axis, _), (label, _) in zip(options, combo)}
        if any(_matches(labels, entry) for entry in spec.exclude):
            continue
        merged: dict[str, Any] = {}
        for _, over in combo:
            merged.update(over)
        points.append((labels, merged))
    seed_opts = dict(options).get("seed", [(None, {})])
    for i, entry in enumerate(spec.include):
        for key in entry:
            _check_key(file, f"include[{i}]", key)
        for seed_label, seed_over in seed_opts:
            labels = {k: _label(v) for k, v in entry.items()}
            if seed_label is not None and "seed" not in entry:
                labels["seed"] = seed_label
            points.append((labels, {**seed_over, **entry}))
    if not points:
        raise ConfigError(f"sweep {file}: the grid is empty (every point excluded, no axes and no include); "
                          "add axes or include entries, or loosen 'exclude'")
    trials: list[Trial] = []
    seen: dict[str, str] = {}
    for labels, overrides in points:
        raw = copy.deepcopy(base)
        for key, value in overrides.items():
            set_dotted(raw, key, copy.deepcopy(value))
        try:
            cfg = validate_config(raw)
        except ConfigError as err:
            where = ", ".join(f"{k}={v}" for k, v in labels.items())
            raise ConfigError(f"sweep {file}: trial [{where}]: {err}") from None
        cfg = resolve_local_paths(cfg) if resolve_paths else cfg
        chash = stable_hash(cfg)
        if chash in seen:  # an include repeating a grid point: one trial, not two
            continue
        tid = _unique_id(trial_slug(labels), {t.trial_id for t in trials}, chash)
        seen[chash] = tid
        trials.append(Trial(trial_id=tid, axes=labels, config=cfg, config_hash=chash))
    return trials


def _matches(labels: dict[str, str], entry: dict[str, Any]) -> bool:
    for axis, want in entry.items():
        wanted = [_label(w) for w in want] if isinstance(want, list) else [_label(want)]
        if labels.get(axis) not in wanted:
            return False
    return True


def _label(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def trial_slug(labels: dict[str, str]) -> str:
    """A readable, filesystem-safe id from the axis values: ``memit-lora-all-s0``."""
    parts = [f"s{v}" if k == "seed" else v for k, v in labels.items()]
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_") or "x" for p in parts)
    return slug or "trial"


def _unique_id(slug: str, taken: set[str], chash: str) -> str:
    return slug if slug not in taken else f"{slug}-{chash[:6]}"


def resolve_local_paths(cfg: TrialConfig, cwd: Path | None = None) -> TrialConfig:
    """``cache_dir`` and the tracking URI always, and path-valued keys that exist relative to
    ``cwd``, made absolute — before hashing, so the hash is the one ``run_trial`` tags its run with."""
    cwd = cwd or Path.cwd()
    data = cfg.model_dump(mode="json")
    data["cache_dir"] = str((cwd / cfg.cache_dir).resolve())
    data["tracking"]["uri"] = absolute_tracking_uri(cfg.tracking.uri, cwd)
    for key in PATH_KEYS:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        value = node.get(leaf)
        if isinstance(value, str) and value and not os.path.isabs(value) and (cwd / value).exists():
            node[leaf] = str((cwd / value).resolve())
    return TrialConfig.model_validate(data)


def absolute_tracking_uri(uri: str | None, cwd: Path) -> str:
    """Where runs go (:func:`editdecay.tracking.resolve_tracking_uri`), with a relative sqlite path
    made absolute: Tune runs trials in other working directories, where a relative one would be a
    new, empty store."""
    from editdecay.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(uri, cwd)
    if uri.startswith("sqlite:///") and not uri[len("sqlite:///"):].startswith("/"):
        uri = f"sqlite:///{(cwd / uri[len('sqlite:///'):]).resolve()}"
    elif "://" not in uri:  # a plain directory: MLflow's file store
        uri = str((cwd / uri).resolve())
    return uri


# ------------------------------------------------------------------------------------------------
# Views


SUMMARY_COLUMNS = ("edit.method", "finetune.method", "finetune.layers")


def trial_table(sweep: Sweep) -> str:
    """The expanded trials, one line each (``--dry-run``)."""
    headers = ["#", "trial_id", *sweep.axis_names, "config_hash"]
    rows = [[str(i), t.trial_id, *(t.axes.get(a, "-") for a in sweep.axis_names), t.config_hash]
            for i, t in enumerate(sweep.trials)]
    return format_table(headers, rows)


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])
