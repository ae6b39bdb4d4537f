"""Layer statistics: C = E[k kᵀ], the uncentred second moment of the MLP-output-projection input.

MEMIT weighs its update by λC; AlphaEdit projects onto C's null space. The reference code runs the
whole model over 100,000 Wikipedia texts one small batch at a time and keeps the result in a
module-global dict. Here:

- every requested layer is accumulated in one pass, and the pass stops at the last needed layer
  (a hook raises :class:`_StopForward` there; later blocks and the LM head never run);
- batches are packed by a token budget over length-sorted texts (little padding);
- sums are matrix products in float32 or float64 (``edit.stats.dtype``, stored in the file);
- results are cached as safetensors under ``{cache_dir}/stats/``, keyed by (model fingerprint,
  layer, corpus id, sample count, max length, dtype), written atomically; a partial sum is saved
  every ``save_every`` batches so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from editdecay.arch import check_layers, mlp_out_module
from editdecay.config import StatsConfig, TrialConfig
from editdecay.editing.common import EditError, hooks, model_device, pad, pad_id
from editdecay.errors import DataError
from editdecay.io import atomic_write_with

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
FORMAT_VERSION = "1"


class _StopForward(Exception):
    """Raised by the hook on the last needed layer: the rest of the forward pass is not needed."""


# --------------------------------------------------------------------------------------------
# Corpus


@dataclass(frozen=True)
class Corpus:
    corpus_id: str  # part of the cache key: equal ids mean equal texts
    texts: list[str]


def load_corpus(cfg: TrialConfig) -> Corpus:
    """The texts ``edit.stats.corpus`` names, at most ``n_samples`` of them."""
    s = cfg.edit.stats
    n = s.n_samples
    if s.corpus == "world":
        from editdecay.config import stable_hash
        from editdecay.world.facts import World

        world = World(cfg.world)
        texts: list[str] = []
        epoch = 0
        while len(texts) < n:  # cycle the shuffled corpus: the same sentences in new contexts
            texts += world.corpus(epoch_seed=10_000 + epoch)
            epoch += 1
        return Corpus(f"world-{stable_hash(cfg.world)}", texts[:n])
    path = Path(s.corpus).expanduser()
    if path.is_file() and path.suffix.lower() in (".txt", ".text", ""):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line][:n]
        if not texts:
            raise DataError(f"edit.stats.corpus: {path} holds no non-empty lines")
        return Corpus(f"file-{path.stem}-{digest}", texts)
    return _load_hf_corpus(s)


def _load_hf_corpus(s: StatsConfig) -> Corpus:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError("edit.stats.corpus: the 'datasets' package is needed to read hub or local datasets") from None
    try:
        ds = datasets.load_dataset(s.corpus, s.dataset_config, split=s.split)
    except Exception as err:  # datasets raises many types; the user needs one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"edit.stats.corpus: cannot load dataset {s.corpus!r} (config {s.dataset_config!r}, "
                        f"split {s.split!r}): {first}") from None
    if s.text_field not in ds.column_names:
        raise DataError(f"edit.stats.text_field: {s.text_field!r} is not a column of {s.corpus!r}; "
                        f"columns: {', '.join(ds.column_names)}")
    texts: list[str] = []
    for row in ds:
        text = (row[s.text_field] or "").strip()
        if text:  # wikitext has many empty lines
            texts.append(text)
            if len(texts) >= s.n_samples:
                break
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{s.corpus}-{s.dataset_config}-{s.split}")
    return Corpus(f"hf-{slug}", texts)


# --------------------------------------------------------------------------------------------
# Accumulation


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices of texts, length-sorted and packed so that rows x longest row <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[i]  # sorted ascending: the newest row is the longest
        if cur and (len(cur) + 1) * width > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


@dataclass
class Partial:
    sums: dict[int, torch.Tensor]
    count: int  # tokens accumulated
    batches_done: int


def accumulate_second_moments(
    model: torch.nn.Module,
    tokenizer,
    texts: list[str],
    layers: list[int],
    *,
    max_length: int = 128,
    dtype: torch.dtype = torch.float32,
    batch_tokens: int = 8192,
    stop_early: bool = True,
    resume: Partial | None = None,
    on_checkpoint=None,
    save_every: int = 50,
    progress: bool = True,
) -> Partial:
    """Sum k kᵀ over every real (non-padding) token at each layer; ``sums[l] / count`` is C.

    ``on_checkpoint(partial)`` is called every ``save_every`` batches with the running sums.
    """
    from tqdm.auto import tqdm

    layers = check_layers(layers, model, key="stats layers")
    device = model_device(model)
    enc = tokenizer(texts, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    batches = token_batches([len(ids) for ids in enc], batch_tokens)
    state = resume or Partial(sums={}, count=0, batches_done=0)
    state.sums = {layer: t.to(device) for layer, t in state.sums.items()}  # a resumed sum is on the CPU
    mask_holder: dict[str, torch.Tensor] = {}
    last = max(layers)

    def make_hook(layer: int):
        def pre_hook(_module, args):
            k = args[0]
            m = mask_holder["mask"].bool()
            k = k[m].to(dtype)  # [real tokens, d_in]
            s = state.sums.get(layer)
            state.sums[layer] = k.T @ k if s is None else s.addmm_(k.T, k)
            if stop_early and layer == last:
                raise _StopForward
        return pre_hook

    handles = [mlp_out_module(model, layer).register_forward_pre_hook(make_hook(layer)) for layer in layers]
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(batches), initial=state.batches_done, desc=f"stats layers {layers}", unit="batch",
               disable=not progress, leave=False)
    try:
        with hooks(handles), torch.no_grad():
            for b in range(state.batches_done, len(batches)):
                ids, mask = pad([enc[i] for i in batches[b]], pad_id(tokenizer), device)
                mask_holder["mask"] = mask
                try:
                    model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _StopForward:
                    pass
                state.count += int(mask.sum())
                state.batches_done = b + 1
                bar.update(1)
                if on_checkpoint is not None and state.batches_done % save_every == 0 and state.batches_done < len(batches):
                    on_checkpoint(state)
    finally:
        bar.close()
        model.train(was_training)
    return state


# --------------------------------------------------------------------------------------------
# Cache


@dataclass(frozen=True)
class StatsKey:
    fingerprint: str
    corpus_id: str
    n_samples: int
    max_length: int
    dtype: str

    def directory(self, cache_dir: str | os.PathLike) -> Path:
        return (Path(cache_dir) / "stats" / self.fingerprint[:16]
                / f"{self.corpus_id}-n{self.n_samples}-len{self.max_length}-{self.dtype}")

    def metadata(self, layer: int) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "corpus_id": self.corpus_id, "n_samples": str(self.n_samples),
                "max_length": str(self.max_length), "dtype": self.dtype, "layer": str(layer),
                "format": FORMAT_VERSION}


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_moment(path: Path, expect: dict[str, str]) -> tuple[torch.Tensor, dict[str, str]]:
    """Load a cached moment, checking that it was computed for this model and setting."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in ("fingerprint", "corpus_id", "n_samples", "max_length", "dtype", "layer"):
            if meta.get(key) != expect[key]:
                what = "another model (weights fingerprint differs)" if key == "fingerprint" else f"another {key}"
                raise EditError(f"stats cache {path} was computed for {what}: stored {key}={meta.get(key)!r}, "
                                f"expected {expect[key]!r}; delete the file to recompute")
        return f.get_tensor("mom2"), meta


def second_moments(model: torch.nn.Module, tokenizer, cfg: TrialConfig, layers: list[int],
                   *, progress: bool = True, force: bool = False) -> dict[int, torch.Tensor]:
    """C for each layer, from the cache or computed (all missing layers in one pass), then cached.
    ``force`` (the trial's ``--force``) recomputes every layer; a cached file that cannot be read
    (truncated, corrupted) is reported in one line and recomputed."""
    from editdecay.models import model_fingerprint

    layers = check_layers(layers, model, key="edit.layers")
    s = cfg.edit.stats
    corpus = load_corpus(cfg)
    key = StatsKey(model_fingerprint(model), corpus.corpus_id, len(corpus.texts), s.max_length, s.dtype)
    out_dir = key.directory(cfg.cache_dir)
    result: dict[int, torch.Tensor] = {}
    missing = []
    for layer in layers:
        path = out_dir / f"layer{layer}.safetensors"
        if path.is_file() and not force:
            try:
                result[layer], _ = read_moment(path, key.metadata(layer))
                continue
            except EditError:
                raise
            except Exception as err:  # safetensors/OS errors: a truncated or corrupted file
                log.warning("stats: %s is unreadable (%s); recomputing it", path, str(err).splitlines()[0] if str(err) else type(err).__name__)
                print(f"editdecay: layer statistics {path} are unreadable; recomputing them", flush=True)
        missing.append(layer)
    if not missing:
        return result

    partial_path = out_dir / f"partial-layers{'-'.join(map(str, missing))}.safetensors"
    resume = None if force else _load_partial(partial_path, key, missing)
    if resume is not None:
        log.info("stats: resuming layers %s from batch %d (%d tokens)", missing, resume.batches_done, resume.count)

    def checkpoint(state: Partial) -> None:
        meta = {**key.metadata(-1), "count": str(state.count), "batches_done": str(state.batches_done),
                "layers": json.dumps(missing)}
        _atomic_save({f"sum{layer}": state.sums[layer] for layer in missing}, partial_path, meta)

    state = accumulate_second_moments(
        model, tokenizer, corpus.texts, missing, max_length=s.max_length, dtype=_DTYPES[s.dtype],
        batch_tokens=s.batch_tokens, resume=resume, on_checkpoint=checkpoint, save_every=s.save_every,
        progress=progress)
    if state.count == 0:
        raise DataError(f"edit.stats.corpus: {corpus.corpus_id} gave no tokens")
    for layer in missing:
        mom2 = state.sums[layer] / state.count
        if not torch.isfinite(mom2).all():
            raise EditError(f"layer {layer} statistics are non-finite; the model's activations overflow "
                            f"(try edit.stats.dtype=float64 or model.dtype=float32)")
        meta = {**key.metadata(layer), "count": str(state.count)}
        _atomic_save({"mom2": mom2}, out_dir / f"layer{layer}.safetensors", meta)
        result[layer] = mom2
    partial_path.unlink(missing_ok=True)
    return result


def _load_partial(path: Path, key: StatsKey, layers: list[int]) -> Partial | None:
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            expect = key.metadata(-1)
            if any(meta.get(k) != expect[k] for k in ("fingerprint", "corpus_id", "n_samples", "max_length", "dtype")):
                raise EditError(f"stats partial sum {path} belongs to another model or setting; delete it to recompute")
            sums = {layer: f.get_tensor(f"sum{layer}") for layer in layers}
    except EditError:
        raise
    except Exception:  # a partial sum cut short by a kill: start the pass over
        log.warning("stats: partial sum %s is unreadable; starting the pass over", path)
        return None
    return Partial(sums=sums, count=int(meta["count"]), batches_done=int(meta["batches_done"]))
