"""Loading causal LMs and tokenizers, with one-line errors, and fingerprinting their weights.

``model.name`` is a hub id (``gpt2-xl``, ``EleutherAI/gpt-j-6b``, ``meta-llama/Llama-2-7b-hf``),
a local directory written by ``save_pretrained``, or ``toy`` (the offline default, built by
``editdecay prepare``; see :func:`resolve_model_path`).

Every failure a user can cause or fix (no network, a path that does not exist, a gated repo, an
architecture missing from :mod:`editdecay.arch`) is raised as :class:`ModelLoadError` with one line
naming ``model.name`` and the fix. Without network the Hugging Face client retries for ~25 s before
giving up, so for hub ids we first make a quick connection to the hub (a few seconds at most) and,
if that fails, load with ``local_files_only=True``: cached models still load, uncached ones fail
at once.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from editdecay.accelerators import name_deepspeed_accelerator
from editdecay.arch import arch_for
from editdecay.config import ModelConfig
from editdecay.errors import EditDecayError, ModelLoadError
from editdecay.preflight import hub_reachable as _hub_reachable  # one probe, shared with the preflight
from editdecay.preflight import looks_like_path  # one rule for 'a path, not a hub id'

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from editdecay.config import TrialConfig

name_deepspeed_accelerator()  # before transformers imports DeepSpeed, which warns when it has to guess

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Fingerprint: tensors up to this many elements are hashed in full, larger ones by a strided sample.
_FULL_HASH_MAX_NUMEL = 1 << 20
_SAMPLE_NUMEL = 1 << 16


# --------------------------------------------------------------------------------------------
# Public API


def load_model(cfg: ModelConfig, path: str | os.PathLike | None = None) -> tuple["PreTrainedModel", "PreTrainedTokenizerBase"]:
    """Load ``(model, tokenizer)`` from ``path`` (if given) or ``cfg.name``; model in eval mode.

    The architecture is checked against :data:`editdecay.arch.ARCHITECTURES` from the config alone,
    before any weights load. A tokenizer without a pad token gets ``pad = eos``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = str(path if path is not None else cfg.name)
    device = _resolve_device(cfg.device)
    local_dir = _local_dir(name)

    offline_reason: str | None = None  # why we load with local_files_only=True, for messages
    if cfg.local_files_only:
        offline_reason = "model.local_files_only is true"
    elif local_dir is None:
        from huggingface_hub import is_offline_mode

        if is_offline_mode():
            offline_reason = "HF_HUB_OFFLINE is set"
        elif not _hub_reachable():
            offline_reason = "no network"

    common: dict = {"trust_remote_code": cfg.trust_remote_code, "local_files_only": offline_reason is not None}
    if cfg.revision is not None:
        common["revision"] = cfg.revision
    ctx = _LoadContext(name=name, local_dir=local_dir, offline_reason=offline_reason, revision=cfg.revision)

    with ctx.translate("config"):
        config = AutoConfig.from_pretrained(name, **common)
    try:
        arch_for(config)
    except ModelLoadError as err:
        raise ModelLoadError(f"model.name: cannot use '{name}': {err}") from None

    if local_dir is not None and not _has_tokenizer_files(local_dir):
        # transformers 5 would silently build an empty tokenizer from the config alone.
        raise ModelLoadError(
            f"model.name: directory '{name}' has no tokenizer files (tokenizer.json, tokenizer.model, "
            "vocab.json, ...); save the tokenizer with save_pretrained into the same directory"
        )
    with ctx.translate("tokenizer"):
        tokenizer = AutoTokenizer.from_pretrained(name, **common)
    if len(tokenizer) < 2:
        raise ModelLoadError(
            f"model.name: the tokenizer of '{name}' is empty ({len(tokenizer)} tokens); its tokenizer files "
            "are missing or unreadable"
        )

    load_kwargs = dict(common)
    load_kwargs["config"] = config
    load_kwargs["dtype"] = "auto" if cfg.dtype == "auto" else _DTYPES[cfg.dtype]  # transformers 5: dtype=, not torch_dtype=
    if _has_safetensors(name, local_dir, cfg.revision):
        load_kwargs["use_safetensors"] = True
    if device.type == "cuda":
        load_kwargs["device_map"] = str(device)  # load straight onto the GPU, no CPU copy of a 7B model
    load_kwargs["output_loading_info"] = True
    with ctx.translate("weights"):
        model, info = AutoModelForCausalLM.from_pretrained(name, **load_kwargs)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        # transformers would leave these randomly initialized, with only a log warning.
        raise ModelLoadError(
            f"model.name: the weights of '{name}' lack {len(missing)} tensor(s) the config needs "
            f"(e.g. {missing[0]}); the checkpoint is incomplete or belongs to another model"
        )
    if device.type != "cuda":
        model.to(device)
    model.eval()

    # Batched evaluation pads prompts of different lengths; GPT-2, GPT-J and Llama ship no pad
    # token. Padded positions are masked by the attention mask, so reusing eos is harmless.
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                f"model.name: the tokenizer of '{name}' has neither a pad nor an eos token; "
                "batched evaluation needs one (add a pad_token to its tokenizer_config.json)"
            )
        tokenizer.pad_token = tokenizer.eos_token
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def model_fingerprint(model: torch.nn.Module) -> str:
    """A stable hex digest of the weights (keys layer-statistics caches).

    Hashes the model_type, and each parameter's name, shape, dtype and bytes: all bytes for tensors
    up to 2**20 elements, a strided sample of ~2**16 elements for larger ones (a 7B model hashes in
    well under a second). Dense changes (edits, fine-tuning, a different seed) always change it;
    a single changed element of a large tensor is seen only if it falls on the sample.
    Independent of the device; depends on dtype.
    """
    config = getattr(model, "config", None)
    h = hashlib.sha256()
    h.update(f"model_type={getattr(config, 'model_type', type(model).__name__)}\n".encode())
    params = dict(model.named_parameters())  # tied weights appear once
    for pname in sorted(params):
        t = params[pname].detach()
        flat = t.reshape(-1)
        n = flat.numel()
        stride = 1 if n <= _FULL_HASH_MAX_NUMEL else -(-n // _SAMPLE_NUMEL)
        h.update(f"{pname}|{tuple(t.shape)}|{t.dtype}|{stride}\n".encode())
        sample = flat[::stride]
        if stride > 1:  # the last element too, so a tensor's tail is covered
            sample = torch.cat([sample, flat[-1:]])
        h.update(sample.contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def resolve_model_path(cfg: "TrialConfig") -> str:
    """The path or hub id to load: ``toy`` is built (or found) under the cache, a named source
    (``smollm2-135m``) or a ``.gguf`` file is converted once into the cache; others as given."""
    if cfg.model.name == "toy":
        from editdecay.world.toy import ensure_toy_model

        return str(ensure_toy_model(cfg))
    from editdecay.model_sources import prepared_model_dir

    prepared = prepared_model_dir(cfg.model.name, cfg.cache_dir)
    return str(prepared) if prepared is not None else cfg.model.name


# --------------------------------------------------------------------------------------------
# Helpers


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            "model.device: 'cuda' was asked for but this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}); set model.device=cpu or model.device=auto"
        )
    return torch.device(device)


def _local_dir(name: str) -> Path | None:
    """The local model directory ``name`` names, None for a hub id; error for a bad path."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(
                f"model.name: directory '{name}' has no config.json; point model.name at a directory "
                "written by save_pretrained (config.json, weights, tokenizer files) or give a hub id"
            )
        return p
    if p.exists():
        raise ModelLoadError(f"model.name: '{name}' is a file, not a model directory; give the directory that holds config.json")
    if looks_like_path(name):
        raise ModelLoadError(
            f"model.name: directory '{name}' does not exist; give an existing model directory "
            "(with config.json) or a hub id such as gpt2-xl"
        )
    return None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "tekken.json")


def _has_tokenizer_files(local_dir: Path) -> bool:
    return any((local_dir / f).is_file() for f in _TOKENIZER_FILES) or any(local_dir.glob("*.tiktoken"))


def _has_safetensors(name: str, local_dir: Path | None, revision: str | None) -> bool:
    """Whether safetensors weights are there to load (local dir, or already in the hub cache)."""
    if local_dir is not None:
        return any(local_dir.glob("*.safetensors"))
    try:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "model.safetensors.index.json"):
            hit = try_to_load_from_cache(name, fname, revision=revision)
            if isinstance(hit, str):
                return True
    except Exception:  # an invalid repo id etc.: the loader reports it properly
        return False
    return False  # not cached: let transformers choose (it prefers safetensors when the repo has them)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def _cause_chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        chain.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return chain


class _LoadContext:
    """Turns the exceptions transformers / huggingface_hub raise into one-line ModelLoadErrors."""

    def __init__(self, name: str, local_dir: Path | None, offline_reason: str | None, revision: str | None):
        self.name = name
        self.local_dir = local_dir
        self.offline_reason = offline_reason
        self.revision = revision

    def translate(self, what: str) -> "_Translate":
        return _Translate(self, what)

    def message(self, err: BaseException, what: str) -> str:
        from huggingface_hub import errors as hf_errors

        name = self.name
        chain = _cause_chain(err)

        def has(cls: type) -> bool:
            return any(isinstance(e, cls) for e in chain)

        if self.local_dir is None:
            also = f" (and there is no local directory '{name}')" if "/" in name else ""
            if has(hf_errors.GatedRepoError):
                return (
                    f"model.name: '{name}' is a gated repository and this machine has no access; accept its "
                    f"terms at https://huggingface.co/{name} and log in (hf auth login, or set HF_TOKEN), "
                    "or pass model.name=/local/dir"
                )
            if has(hf_errors.RevisionNotFoundError):
                return (
                    f"model.revision: '{self.revision}' is not a branch, tag or commit of '{name}'; "
                    f"see https://huggingface.co/{name} for its revisions"
                )
            if has(hf_errors.RepositoryNotFoundError):
                return (
                    f"model.name: '{name}' is not a model on the Hugging Face hub{also} (or it is private: "
                    "log in with hf auth login); check the spelling or pass model.name=/local/dir"
                )
            if has(hf_errors.HFValidationError):
                return (
                    f"model.name: '{name}' is neither an existing local directory nor a valid hub id "
                    "(owner/name); fix the path or the id"
                )
            if has(hf_errors.LocalEntryNotFoundError) or has(hf_errors.OfflineModeIsEnabled) or _is_network_error(chain):
                part = "" if what == "config" else f" ({what} files missing)"
                if self.offline_reason in (None, "no network"):
                    return (
                        f"model.name: cannot load '{name}': not in the local Hugging Face cache{part} and the hub "
                        "is unreachable (no network); download it on a machine with network and pass "
                        "model.name=/local/dir"
                    )
                return (
                    f"model.name: cannot load '{name}': not in the local Hugging Face cache{part} and offline "
                    f"mode is on ({self.offline_reason}); download it first (e.g. hf download {name}) or pass "
                    "model.name=/local/dir"
                )
            if has(hf_errors.HfHubHTTPError):
                return f"model.name: the hub refused '{name}' ({_first_line(err)}); check the id and your access, or pass model.name=/local/dir"
        # A local directory, or something unexpected from the hub.
        if what == "tokenizer":
            return (
                f"model.name: cannot load the tokenizer of '{name}': {_first_line(err)}; the directory needs "
                "tokenizer files (save the tokenizer with save_pretrained next to the model)"
            )
        if what == "config":
            return f"model.name: cannot read the config of '{name}': {_first_line(err)}"
        return f"model.name: cannot load the weights of '{name}': {_first_line(err)}"


def _is_network_error(chain: list[BaseException]) -> bool:
    for e in chain:
        if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        # httpx (vendored under another module name in some releases): match by class name.
        if any(c.__name__ in ("NetworkError", "ConnectError", "TimeoutException", "ProxyError") for c in type(e).__mro__):
            return True
    return False


class _Translate:
    def __init__(self, ctx: _LoadContext, what: str):
        self.ctx = ctx
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, EditDecayError):
            return False
        if isinstance(exc, RuntimeError) and "ignore_mismatched_sizes" in str(exc):
            raise ModelLoadError(
                f"model.name: the weights of '{self.ctx.name}' do not fit its config.json (tensor sizes "
                "differ; the log above lists them); the config and the checkpoint belong to different models"
            ) from None
        if not isinstance(exc, (OSError, ValueError, KeyError)) and not _is_hub_error(exc):
            return False  # a bug: keep its traceback
        raise ModelLoadError(self.ctx.message(exc, self.what)) from None


def _is_hub_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.startswith(("huggingface_hub", "httpx", "safetensors")) or _is_network_error([exc])
