"""Checks that need only the config and the filesystem, run before anything heavy.

A trial (and every trial of a sweep) is checked here before an MLflow run is created and before
Ray starts; the stage commands (``edit``, ``stats``, ``finetune``, ``evaluate``, ``trace``,
``prepare``, ``data``) check the parts they use. What is knowable without loading a model fails in
seconds with one line, instead of after the model has loaded (and, in a sweep, once per retry):

- paths: the model directory, edit data, fine-tuning data, DS files, stats corpus, DeepSpeed JSON,
  ``cache_dir``;
- the edit dataset: read once (cheap: JSON, or the fact world), its ``case_id`` s unique and at
  least ``edit.num_edits`` records;
- the model: a directory's ``config.json`` only (valid JSON, a causal-LM family of
  :mod:`editdecay.arch`, tokenizer files), a ``.gguf`` file's magic, size and structure, a hub id
  in the local cache when the hub cannot be reached (offline); layer indices against its depth;
- the machine: ``model.device=cuda`` needs a GPU, ``finetune.precision=fp16`` needs one too;
- fine-tuning batch arithmetic (micro batch × ranks divides the batch).

torch is imported only for the device checks that need it (``cuda``, ``fp16``); everything else is
pathlib, json and the config. ``memo`` lets a sweep read each dataset and probe the hub once for
all of its trials.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from editdecay.config import TrialConfig
from editdecay.errors import ConfigError, DataError, ModelLoadError

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")  # as finetune/distributed.py
STAGES = frozenset({"model", "data", "edit", "finetune", "eval"})
GGUF_MAGIC = b"GGUF"
GGUF_MIN_BYTES = 24  # magic, version, tensor count, metadata count
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tekken.json")
PROBE_TIMEOUT_S = 3.0  # hub connectivity probe (DNS + TCP connect)


def looks_like_path(name: str) -> bool:
    """True for names that can only be a filesystem path, not a hub id (``owner/name``)."""
    return (name.startswith(("/", "./", "../", "~", ".")) or "\\" in name or name.count("/") > 1
            or name.endswith("/") or (len(name) > 1 and name[1] == ":"))


def check_trial_inputs(cfg: TrialConfig, *, stages: frozenset[str] | set[str] = STAGES, model_path: str | None = None,
                       gpus: float | None = None, memo: dict[Any, Any] | None = None) -> int | None:
    """Everything a trial (or the ``stages`` of one that a command runs) reads, checked without loading it.

    ``model_path``: a model given on the command line instead of ``model.name``. ``gpus``: the GPUs a
    sweep reserves per trial (trials may run on other nodes: the driver's own CUDA is irrelevant);
    None checks this machine. ``memo``: shared across calls (a sweep's trials) so each dataset is
    read and the hub probed once. Returns the model's layer count where it is known without loading it.
    """
    memo = {} if memo is None else memo
    _check_cache_dir(cfg.cache_dir)
    n_layers = None
    if "model" in stages:
        n_layers = check_model(model_path or cfg.model.name, cfg, memo)
        _check_device(cfg, gpus, finetune="finetune" in stages)
    if "data" in stages:
        _check_edit_data(cfg, memo)
    stats = cfg.edit.stats
    if "edit" in stages and cfg.edit.method != "none" and stats.corpus != "world" and looks_like_path(stats.corpus):
        _must_exist(stats.corpus, "edit.stats.corpus", "a text file (one text per line) or a datasets id")
    ft = cfg.finetune
    if "finetune" in stages and ft.method != "none":
        if ft.data.source == "file" and ft.data.path:
            _must_exist(ft.data.path, "finetune.data.path", "a JSON/JSONL/Parquet/CSV file or a directory of them")
        if ft.method == "full" and ft.deepspeed not in ("none", *DEEPSPEED_PRESETS):
            p = Path(ft.deepspeed).expanduser()
            if not p.is_file():
                raise ConfigError(f"finetune.deepspeed: '{ft.deepspeed}' is not a file; allowed: none, "
                                  f"{', '.join(DEEPSPEED_PRESETS)} or a JSON path")
            _check_json_file(p, "finetune.deepspeed", "a DeepSpeed config (JSON object)")
        from editdecay.finetune.recipe import resolve_recipe

        resolve_recipe(ft, ft.num_processes)  # batch arithmetic: micro batch x ranks must divide the batch
    if "eval" in stages and cfg.eval.ds_source == "file":
        if not cfg.eval.ds_path:
            raise DataError("eval.ds_path is required when eval.ds_source is 'file'")
        _must_exist(cfg.eval.ds_path, "eval.ds_path", "a JSON/JSONL file or a directory of <task>/test.json")
    if cfg.eval.native_facts and cfg.eval.native_path:
        _must_exist(cfg.eval.native_path, "eval.native_path", "a .jsonl/.json file of facts in the records shape")
    if n_layers is not None:
        if "edit" in stages and cfg.edit.method != "none" and cfg.edit.layers is not None:
            _check_layers(cfg.edit.layers, n_layers, "edit.layers")
        if "finetune" in stages and ft.method != "none" and isinstance(ft.layers, list):
            _check_layers(ft.layers, n_layers, "finetune.layers")
    return n_layers


# ------------------------------------------------------------------------------------------------
# Paths


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


def _check_json_file(path: Path, key: str, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{key}: cannot read {path} ({getattr(err, 'strerror', None) or err}); give {what}") from None
    except ValueError as err:
        raise DataError(f"{key}: {path} is not valid JSON ({err}); give {what}") from None
    if not isinstance(data, dict):
        raise DataError(f"{key}: {path} holds a JSON {type(data).__name__}, not an object; give {what}")
    return data


# ------------------------------------------------------------------------------------------------
# The edit dataset


def _check_edit_data(cfg: TrialConfig, memo: dict[Any, Any]) -> None:
    data = cfg.data
    if data.source == "hf":  # read through `datasets` (maybe from the hub): not cheap; checked when it loads
        if data.path and looks_like_path(data.path):
            _must_exist(data.path, "data.path", "the edit dataset file")
        return
    if data.source != "world":
        if not data.path:
            raise DataError(f"data.path is required when data.source is '{data.source}'")
        _must_exist(data.path, "data.path", "the edit dataset file")
        p = Path(data.path).expanduser()
        st = p.stat()
        key = ("data", data.model_dump_json(), str(p.resolve()), st.st_size, st.st_mtime_ns)
    else:
        key = ("data", data.model_dump_json(), cfg.world.model_dump_json())
    if key not in memo:
        from editdecay.data.edits import load_edit_dataset

        memo[key] = len(load_edit_dataset(cfg))  # one-line DataError for bad records and repeated case ids
    n = memo[key]
    if cfg.edit.num_edits > n:
        raise DataError(f"edit.num_edits={cfg.edit.num_edits} but the edit dataset ({data.source}) has only "
                        f"{n} records; lower edit.num_edits or use a larger dataset")


# ------------------------------------------------------------------------------------------------
# The model


def check_model(name: str, cfg: TrialConfig, memo: dict[Any, Any] | None = None) -> int | None:
    """The model's layer count where it can be known without loading it (toy, named source, local
    directory, cached hub config); raises a one-line ModelLoadError for what will not load."""
    memo = {} if memo is None else memo
    if name == "toy":
        return cfg.model.toy.n_layer
    from editdecay.model_sources import MODEL_SOURCES

    if name in MODEL_SOURCES:  # a named source, fetched on first use
        return MODEL_SOURCES[name].n_layers
    p = Path(name).expanduser()
    if name.lower().endswith(".gguf"):  # converted once into the cache (editdecay.model_sources)
        if not p.is_file():
            raise ModelLoadError(f"model.name: GGUF file '{name}' does not exist; give the path of a .gguf file")
        check_gguf(p, name)
        return None
    if p.is_dir():
        return _check_model_dir(p, name)
    if p.exists():
        raise ModelLoadError(f"model.name: '{name}' is a file, not a model directory; give the directory that holds config.json")
    if looks_like_path(name):
        raise ModelLoadError(f"model.name: directory '{name}' does not exist; give an existing model directory "
                             "(with config.json) or a hub id such as gpt2-xl")
    return _check_hub_id(name, cfg, memo)


def _check_model_dir(p: Path, name: str) -> int | None:
    config = p / "config.json"
    if not config.is_file():
        raise ModelLoadError(f"model.name: directory '{name}' has no config.json; point model.name at a directory "
                             "written by save_pretrained, or give a hub id")
    n_layers = _check_model_config(config, name)
    if not any((p / f).is_file() for f in TOKENIZER_FILES) and not any(p.glob("*.tiktoken")):
        raise ModelLoadError(f"model.name: directory '{name}' has no tokenizer files (tokenizer.json, tokenizer.model, "
                             "vocab.json, ...); save the tokenizer with save_pretrained into the same directory")
    return n_layers


def _check_model_config(config: Path, name: str) -> int | None:
    """``config.json`` names a causal-LM family of the architecture table; its layer count."""
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"model.name: cannot read {config} ({getattr(err, 'strerror', None) or err}); "
                             "fix its permissions or save the model again") from None
    except ValueError as err:
        raise ModelLoadError(f"model.name: {config} is not valid JSON ({err}); restore it or save the model again "
                             "with save_pretrained") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"model.name: {config} holds a JSON {type(data).__name__}, not the object "
                             "save_pretrained writes; restore it")
    from editdecay.arch import ARCHITECTURES

    model_type = data.get("model_type")
    if model_type not in ARCHITECTURES:
        archs = data.get("architectures")
        what = f"a '{model_type}' model" if model_type else "a config without model_type"
        if isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs):
            what += f" ({', '.join(archs[:2])})"
        raise ModelLoadError(f"model.name: '{name}' is {what}, not a causal LM editdecay can edit; supported "
                             f"model types: {', '.join(ARCHITECTURES)} (add a row to editdecay/arch.py ARCHITECTURES)")
    n = data.get(ARCHITECTURES[model_type].n_layers_attr)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ModelLoadError(f"model.name: {config} has no valid {ARCHITECTURES[model_type].n_layers_attr} "
                             f"(got {n!r}); restore the file or save the model again")
    return n


def check_gguf(path: Path, name: str | None = None) -> None:
    """A GGUF file: the magic, the minimum size, and a header whose tensors fit in the file."""
    name = name or str(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ModelLoadError(f"model.name: cannot read GGUF file '{name}' ({err.strerror}); fix its permissions") from None
    if size < GGUF_MIN_BYTES:
        raise ModelLoadError(f"model.name: '{name}' is {size} bytes, too short for a GGUF file (empty or cut off); "
                             "download the .gguf again")
    if head != GGUF_MAGIC:
        raise ModelLoadError(f"model.name: '{name}' is not a GGUF file (it does not start with 'GGUF'); "
                             "give a .gguf model file")
    try:
        from gguf import GGUFReader
    except ImportError:
        return  # the converter reports the missing package (model_sources.py)
    try:
        reader = GGUFReader(str(path))
        n_tensors = len(reader.tensors)
    except Exception as err:  # the reader raises ValueError, IndexError, struct/numpy errors on damaged files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise ModelLoadError(f"model.name: '{name}' is a damaged GGUF file (truncated or corrupt: {first}); "
                             "download the .gguf again") from None
    if n_tensors == 0:
        raise ModelLoadError(f"model.name: GGUF file '{name}' holds no tensors; give a model .gguf file")


def _check_hub_id(name: str, cfg: TrialConfig, memo: dict[Any, Any]) -> int | None:
    """A hub id: if the hub cannot be reached (or offline mode is on), it must be in the local cache."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    if cfg.model.local_files_only:
        reason = "model.local_files_only is true"
    elif is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        if "hub_reachable" not in memo:
            memo["hub_reachable"] = hub_reachable()
        if memo["hub_reachable"]:
            return None  # checked when it loads (the hub answers)
        reason = "the hub is unreachable (no network)"
    try:
        cached = try_to_load_from_cache(name, "config.json", revision=cfg.model.revision)
    except (HFValidationError, ValueError):
        raise ModelLoadError(f"model.name: '{name}' is neither an existing local directory nor a valid hub id "
                             "(owner/name); fix the path or the id") from None
    if not isinstance(cached, str):
        raise ModelLoadError(f"model.name: cannot load '{name}': not in the local Hugging Face cache and {reason}; "
                             f"download it first (hf download {name}) on a machine with network, or pass "
                             "model.name=/local/dir")
    return _check_model_config(Path(cached), name)


def probe_address() -> tuple[str, int]:
    """Host and port a hub request would connect to first (the proxy if one is configured)."""
    from huggingface_hub import constants

    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        proxy = os.environ.get(var)
        if proxy:
            u = urlparse(proxy if "://" in proxy else f"http://{proxy}")
            if u.hostname:
                return u.hostname, u.port or 80
    u = urlparse(constants.ENDPOINT)
    return u.hostname or "huggingface.co", u.port or (443 if u.scheme == "https" else 80)


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (DNS included).

    Runs in a daemon thread because name resolution has no timeout of its own.
    """
    host, port = probe_address()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, name="editdecay-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


# ------------------------------------------------------------------------------------------------
# The machine


def _check_device(cfg: TrialConfig, gpus: float | None, finetune: bool) -> None:
    """``model.device=cuda`` and fp16 training need a GPU: this machine's, or (``gpus``) the trial's reservation."""
    device = cfg.model.device
    fp16 = finetune and cfg.finetune.method != "none" and cfg.finetune.precision == "fp16"
    if device == "cpu":
        if fp16:
            raise ConfigError("finetune.precision=fp16 needs a CUDA GPU but model.device is cpu; "
                              "use finetune.precision=bf16 or fp32 on the CPU")
        return
    if device != "cuda" and not fp16:
        return
    if gpus is not None:
        have, where = gpus > 0, "the sweep reserves no GPU per trial (resources.gpu: 0)"
    else:
        import torch

        have, where = torch.cuda.is_available(), f"this machine has no usable CUDA GPU (torch {torch.__version__})"
    if have:
        return
    if device == "cuda":
        raise ModelLoadError(f"model.device: 'cuda' was asked for but {where}; set model.device=cpu or model.device=auto")
    raise ConfigError(f"finetune.precision=fp16 needs a CUDA GPU but {where}; use finetune.precision=bf16 or fp32")


def _check_layers(layers: list[int], n: int, key: str) -> None:
    for layer in layers:
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx < n:
            raise ConfigError(f"{key}: layer {layer} is out of range; this model has layers 0..{n - 1}")
