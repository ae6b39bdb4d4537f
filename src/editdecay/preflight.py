"""Checks that need only the config and the filesystem, run before anything heavy.

A trial (and every trial of a sweep) is checked here before torch/transformers are imported,
before an MLflow run is created and before Ray starts: a missing model directory, data file or
an out-of-range layer fails in well under a second with one line, instead of after the model has
loaded (and, in a sweep, once per retry). Deliberately light: pathlib and json only.
"""

from __future__ import annotations

import json
from pathlib import Path

from editdecay.config import TrialConfig
from editdecay.errors import ConfigError, DataError, ModelLoadError

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")  # as finetune/distributed.py


def looks_like_path(name: str) -> bool:
    """True for names that can only be a filesystem path, not a hub id (``owner/name``)."""
    return (name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.count("/") > 1
            or name.endswith("/") or (len(name) > 1 and name[1] == ":"))


def check_trial_inputs(cfg: TrialConfig) -> None:
    """Every local path the trial reads exists, and every layer index fits the model."""
    _check_cache_dir(cfg.cache_dir)
    n_layers = _check_model(cfg.model.name, cfg)
    if cfg.data.source != "world" and cfg.data.path and (cfg.data.source != "hf" or looks_like_path(cfg.data.path)):
        _must_exist(cfg.data.path, "data.path", "the edit dataset file")
    stats = cfg.edit.stats
    if cfg.edit.method != "none" and stats.corpus != "world" and looks_like_path(stats.corpus):
        _must_exist(stats.corpus, "edit.stats.corpus", "a text file (one text per line) or a datasets id")
    ft = cfg.finetune
    if ft.method != "none" and ft.data.source == "file" and ft.data.path:
        _must_exist(ft.data.path, "finetune.data.path", "a JSON/JSONL/Parquet/CSV file or a directory of them")
    if ft.method == "full" and ft.deepspeed not in ("none", *DEEPSPEED_PRESETS):
        p = Path(ft.deepspeed).expanduser()
        if not p.is_file():
            raise ConfigError(f"finetune.deepspeed: '{ft.deepspeed}' is not a file; allowed: none, "
                              f"{', '.join(DEEPSPEED_PRESETS)} or a JSON path")
    if cfg.eval.ds_source == "file":
        if not cfg.eval.ds_path:
            raise DataError("eval.ds_path is required when eval.ds_source is 'file'")
        _must_exist(cfg.eval.ds_path, "eval.ds_path", "a JSON/JSONL file or a directory of <task>/test.json")
    if cfg.eval.native_facts and cfg.eval.native_path:
        _must_exist(cfg.eval.native_path, "eval.native_path", "a .jsonl/.json file of facts in the records shape")
    if n_layers is not None:
        if cfg.edit.method != "none" and cfg.edit.layers is not None:
            _check_layers(cfg.edit.layers, n_layers, "edit.layers")
        if ft.method != "none" and isinstance(ft.layers, list):
            _check_layers(ft.layers, n_layers, "finetune.layers")


def _check_cache_dir(cache_dir: str) -> None:
    p = Path(cache_dir).expanduser()
    for part in (p, *p.parents):
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"cache_dir: '{cache_dir}' is under a file ({part}), not a directory; "
                                  "set cache_dir (or EDITDECAY_CACHE) to a directory")
            return


def _must_exist(path: str, key: str, what: str) -> None:
    if not Path(path).expanduser().exists():
        raise DataError(f"{key}: '{path}' does not exist; give {what}")


def _check_model(name: str, cfg: TrialConfig) -> int | None:
    """The model's layer count where it can be known without loading it (toy, local directory)."""
    if name == "toy":
        return cfg.model.toy.n_layer
    from editdecay.model_sources import MODEL_SOURCES

    if name in MODEL_SOURCES:  # a named source, fetched on first use
        return MODEL_SOURCES[name].n_layers
    p = Path(name).expanduser()
    if name.lower().endswith(".gguf"):  # converted once into the cache (editdecay.model_sources)
        if not p.is_file():
            raise ModelLoadError(f"model.name: GGUF file '{name}' does not exist; give the path of a .gguf file")
        return None
    if p.is_dir():
        config = p / "config.json"
        if not config.is_file():
            raise ModelLoadError(f"model.name: directory '{name}' has no config.json; point model.name at a directory "
                                 "written by save_pretrained, or give a hub id")
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            return None  # the loader reports an unreadable config.json with its own message
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(data.get(key), int):
                return data[key]
        return None
    if p.exists():
        raise ModelLoadError(f"model.name: '{name}' is a file, not a model directory; give the directory that holds config.json")
    if looks_like_path(name):
        raise ModelLoadError(f"model.name: directory '{name}' does not exist; give an existing model directory "
                             "(with config.json) or a hub id such as gpt2-xl")
    return None  # a hub id: checked when it loads


def _check_layers(layers: list[int], n: int, key: str) -> None:
    for layer in layers:
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx < n:
            raise ConfigError(f"{key}: layer {layer} is out of range; this model has layers 0..{n - 1}")
