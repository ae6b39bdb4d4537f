"""Typed configuration: validated once at the boundary, then trusted inside.

A trial config is YAML (any section may be left out: defaults fill it) plus dotted overrides from
the command line (``edit.method=alphaedit``). Unknown keys, wrong types and bad values fail with
one line naming the key and what is allowed (:class:`~editdecay.errors.ConfigError`).

Sections: ``world`` (the synthetic fact world), ``model`` (what to load; ``name: toy`` is the
offline default built by ``editdecay prepare``), ``data`` (the edit dataset), ``edit``,
``finetune``, ``eval``; the root is the trial.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from editdecay.errors import ConfigError, DataError
from editdecay.paths import default_cache_dir


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable once built."""

    # allow_inf_nan=False: lr=inf or a NaN weight is never a setting, and would pass gt/ge bounds.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


class WorldConfig(Section):
    """The synthetic fact world (deterministic from ``seed``)."""

    seed: int = 0
    n_countries: int = Field(100, ge=8, le=2000)
    n_people: int = Field(120, ge=8, le=5000)
    n_companies: int = Field(30, ge=4, le=2000)
    # Downstream multiple-choice task (Commonsense-170k instruction format).
    n_downstream: int = Field(1200, ge=20)
    downstream_test_fraction: float = Field(0.25, gt=0.0, lt=1.0)


class ToyModelConfig(Section):
    """The small causal LM trained on the fact world (the offline default model)."""

    arch: Literal["gpt2", "llama"] = "gpt2"
    n_layer: int = Field(4, ge=1, le=48)
    n_embd: int = Field(128, ge=16)
    n_head: int = Field(4, ge=1)
    n_positions: int = Field(128, ge=32)
    # Memorising facts needs optimizer steps more than tokens: small batches, many epochs
    # (measured: batch 32 stays near chance where batch 4-8 reaches >99% recall in the same time).
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    # Each fact sentence appears this many times per epoch, each time in a different random context.
    repeats: int = Field(1, ge=1)
    seed: int = 0
    # Each batch's gradient is computed as this many row slices in parallel threads (one torch thread
    # each) and summed in slice order: a fixed part of the recipe, so the weights are the same bits on
    # any number of cores; 2 uses both cores of a 2-core machine. 1: the whole batch in one pass.
    grad_shards: int = Field(1, ge=1, le=16)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "ToyModelConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class ModelConfig(Section):
    """What model to load: ``toy`` (offline default), a hub id, or a local directory."""

    name: str = "toy"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    trust_remote_code: bool = False
    revision: str | None = None
    local_files_only: bool = False
    toy: ToyModelConfig = ToyModelConfig()


class DataConfig(Section):
    """The edit dataset, converted into :class:`editdecay.data.records.EditRecord`.

    ``source``: ``world`` (generated from the fact world), ``counterfact`` / ``mcf`` (ROME/MEMIT
    JSON), ``zsre`` (MEND-eval JSON), ``records`` (our own JSONL/JSON record shape), ``hf``
    (anything ``datasets.load_dataset`` reads from ``path``; rows in ``hf_format``).
    """

    source: Literal["world", "counterfact", "mcf", "zsre", "records", "hf"] = "world"
    path: str | None = None
    # For source=world: write the edit set in CounterFact style or zsRE question style.
    world_format: Literal["counterfact", "zsre"] = "counterfact"
    # For source=hf: which converter the rows go through, and which split to read.
    hf_format: Literal["records", "counterfact", "zsre"] = "records"
    hf_split: str = "train"
    # zsRE target convention: "memit" (target_new = answers[0], as MEMIT/AlphaEdit's code and the
    # study do) or "easyedit" (target_new = alt, target_true = answers[0]).
    zsre_target: Literal["memit", "easyedit"] = "memit"
    # MEMIT's zsRE class scores NS on ``loc + "?"``; false keeps the file's ``loc`` as written.
    zsre_loc_question_mark: bool = True
    on_bad_record: Literal["error", "skip"] = "error"

    @model_validator(mode="after")
    def _path_when_needed(self) -> "DataConfig":
        if self.source != "world" and not self.path:
            raise ValueError(f"data.path is required when data.source is '{self.source}'")
        return self


class StatsConfig(Section):
    """Second moments C = E[k kᵀ] of the MLP-output-projection input (``editdecay stats``).

    ``corpus``: ``world`` (the fact world's corpus, offline default), a named offline English corpus
    (``wordnet-glosses``, ``python-docstrings``: :mod:`editdecay.editing.corpora`), a local text file (one text
    per non-empty line), or anything ``datasets.load_dataset`` reads (hub id such as
    ``wikitext`` with ``dataset_config: wikitext-103-raw-v1``, or a local path).
    """

    corpus: str = "world"
    dataset_config: str | None = None
    split: str = "train"
    text_field: str = "text"
    # The reference code uses 100,000 texts; the fact world cycles its shuffled corpus to reach n.
    n_samples: int = Field(100_000, ge=1)
    max_length: int = Field(128, ge=2)
    dtype: Literal["float32", "float64"] = "float32"
    batch_tokens: int = Field(8192, ge=16)  # token budget per forward pass (padding included)
    save_every: int = Field(50, ge=1)  # batches between resumable partial-sum checkpoints


class EditConfig(Section):
    """Knowledge editing. ``layers: null`` and every ``null`` hyperparameter take the per-model
    default from :mod:`editdecay.editing.hparams`."""

    method: Literal["none", "memit", "alphaedit"] = "memit"
    num_edits: int = Field(100, ge=1)
    # Which records are edited: the dataset's first num_edits, or a sample drawn with the trial's
    # seed (then seeds vary the edited facts too, and a test pooled over seeds counts distinct edits).
    selection: Literal["first", "random"] = "first"
    layers: list[int] | None = Field(None, min_length=1)  # null for the default, never empty
    # Sequential editing: apply the edits in chunks of this size (None: one batch).
    chunk_size: int | None = Field(None, ge=1)
    # MEMIT (Meng et al. 2022): covariance weight λ, z optimisation (steps, lr, norm clamp, KL, wd).
    mom2_weight: float | None = Field(None, gt=0)
    v_num_grad_steps: int | None = Field(None, ge=1)
    v_lr: float | None = Field(None, gt=0)
    clamp_norm_factor: float | None = Field(None, gt=0)
    kl_factor: float | None = Field(None, ge=0)
    v_weight_decay: float | None = Field(None, ge=0)
    # Context templates for keys and z: n generated prefixes of n tokens, seeded (repeatable).
    n_context_templates: int | None = Field(None, ge=0)
    context_template_length: int | None = Field(None, ge=1)
    # Where keys are read and δ is added: the subject's last token (MEMIT) or the prompt's last.
    fact_token: Literal["subject_last", "last"] | None = None
    # Requests per z forward/backward (None: the table's default, 128).
    z_batch_size: int | None = Field(None, ge=1)
    # ... and at most this many padded tokens per z forward/backward (bounds memory; None: the table's).
    z_max_tokens: int | None = Field(None, ge=1)
    # A request's z optimisation stops once its loss is below this (None: the reference's 5e-2; 0: never).
    z_stop_loss: float | None = Field(None, ge=0)
    # AlphaEdit (Fang et al. 2025): null-space threshold on C's eigenvalues, and the L2 weight α.
    nullspace_threshold: float | None = Field(None, gt=0)
    nullspace_mode: Literal["absolute", "relative"] | None = None
    alpha: float | None = Field(None, gt=0)
    stats: StatsConfig = StatsConfig()


LayerSelection = Union[Literal["all", "edited", "non_edited"], list[int]]


class FinetuneDataConfig(Section):
    """Fine-tuning data. ``source: world`` (the fact world's downstream train split, offline default),
    ``file`` (local JSON/JSONL/Parquet/CSV, or a directory) or ``hub`` (a ``datasets`` hub id).

    ``format``: ``instruction`` (Commonsense-170k / LLM-Adapters: instruction, input, output, answer),
    ``hotpotqa`` (question, answer, optional context) or ``prompt_completion`` (prompt, completion).
    ``template``: ``alpaca`` ("### Instruction / ### Response", Llama-style), ``qa`` ("Question: …
    Answer: …", GPT-style) or ``auto`` (by model family).
    """

    source: Literal["world", "file", "hub"] = "world"
    path: str | None = None
    split: str = "train"
    format: Literal["instruction", "hotpotqa", "prompt_completion"] = "instruction"
    template: Literal["auto", "alpaca", "qa"] = "auto"
    cutoff_len: int | None = Field(None, ge=8)  # None: the preset's (paper 256, toy 128)
    train_on_inputs: bool = False  # False: loss on the response only (prompt labels are -100)
    # Examples whose prompt alone reaches cutoff_len: fail (default), drop them, or truncate them.
    too_long: Literal["error", "drop", "truncate"] = "error"
    val_size: float = Field(0.0, ge=0)  # < 1: a fraction of the train rows; >= 1: a count
    max_examples: int | None = Field(None, ge=1)
    hotpotqa_context: bool = True  # put HotpotQA's supporting paragraphs in the prompt

    @model_validator(mode="after")
    def _path_when_needed(self) -> "FinetuneDataConfig":
        if self.source != "world" and not self.path:
            raise ValueError(f"finetune.data.path is required when finetune.data.source is '{self.source}'")
        return self


class FinetuneConfig(Section):
    """Fine-tuning after editing: method, recipe preset and its overrides, layers, data.

    Every recipe knob left ``None`` takes the preset's value (``paper``: the study's recipes,
    ``toy``: small, fast defaults for the toy model); see :mod:`editdecay.finetune.recipe`.
    """

    method: Literal["none", "full", "lora", "dora"] = "lora"
    preset: Literal["toy", "paper"] = "toy"
    layers: LayerSelection = "all"
    # PEFT: target modules (None: the architecture table's peft_targets). attention_only keeps only
    # the attention ones, as the study's code did for selective-layer runs.
    target_modules: list[str] | None = None
    attention_only: bool = False
    lora_r: int | None = Field(None, ge=1)
    lora_alpha: float | None = Field(None, gt=0)
    lora_dropout: float | None = Field(None, ge=0, lt=1)
    merge: bool = False  # also save the adapter merged into the model
    # Full fine-tuning: DeepSpeed ZeRO stage (configs/deepspeed/*.json) or a JSON path; none = plain Trainer.
    deepspeed: str = "zero2"
    # Full FT: also train these (frozen by default when finetuning selected layers).
    train_extra: list[Literal["embed", "final_norm", "lm_head"]] = []
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    lr: float | None = Field(None, gt=0)
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs
    batch_size: int | None = Field(None, ge=1)  # effective batch (micro batch x accumulation x ranks)
    micro_batch_size: int | None = Field(None, ge=1)
    warmup_steps: int | None = Field(None, ge=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    max_grad_norm: float | None = Field(None, gt=0)
    logging_steps: int = Field(10, ge=1)
    save_strategy: Literal["none", "epoch", "steps"] = "epoch"  # Trainer checkpoints (for resuming)
    save_steps: int = Field(500, ge=1)
    keep_checkpoints: bool = False  # keep the Trainer checkpoints in the output dir
    # Full FT in a trial: also keep the whole fine-tuned model in its stage (by default only the
    # trained blocks, blocks.safetensors: the model is the start model with them copied in).
    keep_weights: bool = False
    resume: bool = True  # resume from the last checkpoint of an interrupted run into the same out dir
    curve_every: int | None = Field(None, ge=1)  # decay curve: evaluate the edits every k steps
    # Data-parallel ranks for a trial's fine-tuning (torchrun on the trial's node, one per GPU it
    # reserved; gloo on CPU). >1 records no decay curve (finetune/launch.py).
    num_processes: int = Field(1, ge=1)
    data: FinetuneDataConfig = FinetuneDataConfig()

    @model_validator(mode="after")
    def _layers_not_empty(self) -> "FinetuneConfig":
        if isinstance(self.layers, list) and not self.layers:
            raise ValueError("finetune.layers is an empty list; give layer indices, or all / edited / non_edited")
        return self


class EvalConfig(Section):
    batch_size: int = Field(32, ge=1)
    # Downstream accuracy: score the candidate answers (fast) or generate + regex (the paper's way).
    ds_mode: Literal["loglik", "generate"] = "loglik"
    ds_max_examples: int | None = Field(None, ge=1)  # per task
    # DS data: the fact world's downstream test split, or LLM-Adapters-style files (a JSON/JSONL
    # file with a ``task`` field, or a directory of <task>/test.json).
    ds_source: Literal["world", "file"] = "world"
    ds_path: str | None = None
    ds_batch_size: int = Field(8, ge=1)  # generation batch (beam search multiplies memory by 4)
    ds_max_new_tokens: int = Field(32, ge=1)
    ds_num_beams: int = Field(4, ge=1)
    # The intrinsic-knowledge control (metrics/native.py): this many facts the base model knows,
    # disjoint from the edits and the fine-tuning data, scored in every group; 0 turns it off.
    # Fewer than native_min_facts found: the control is reported missing, with the reason.
    native_facts: int = Field(50, ge=0)
    native_min_facts: int = Field(20, ge=1)
    # Where candidates come from, in this order: the edit dataset's records outside the batch
    # (``records``), their neighborhood probes (``neighborhood``: zsRE's NQ questions), then the
    # facts of ``native_path`` (our record shape, e.g. data/native/wordnet_facts.jsonl).
    native_pool: list[Literal["records", "neighborhood"]] = ["records"]
    native_path: str | None = None

    @model_validator(mode="after")
    def _native_minimum_reachable(self) -> "EvalConfig":
        if self.native_facts and self.native_min_facts > self.native_facts:
            raise ValueError(f"eval.native_min_facts={self.native_min_facts} is more than eval.native_facts="
                             f"{self.native_facts}: the control could never be reported; lower eval.native_min_facts")
        if len(set(self.native_pool)) != len(self.native_pool):
            raise ValueError(f"eval.native_pool lists a source twice: {self.native_pool}")
        if self.native_facts and not self.native_pool and not self.native_path:
            raise ValueError("eval.native_pool is empty and eval.native_path is not set: no candidates for the "
                             f"{self.native_facts} native facts; name a pool (records, neighborhood), a file, or set "
                             "eval.native_facts=0")
        return self


class TrackingConfig(Section):
    """Where a trial logs (MLflow). ``uri`` null: ``MLFLOW_TRACKING_URI`` or the embedded
    ``sqlite:///<cwd>/mlflow.db``. ``log_weights``: which weights become run artifacts — the
    edit deltas and PEFT adapters (small, default), also full fine-tuned checkpoints, or none."""

    experiment: str = "editdecay"
    uri: str | None = None
    log_weights: Literal["none", "deltas_adapters", "full"] = "deltas_adapters"
    curve_edits: int = Field(32, ge=1)  # the decay curve evaluates this fixed subset of the edits

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri is not None:
            from editdecay.tracking import check_tracking_uri

            check_tracking_uri(uri, None)
        return uri


class TrialConfig(Section):
    """One trial: one model, one editor, one edit set and size, one fine-tuning setting, one seed."""

    name: str = "trial"
    seed: int = 0
    # EDITDECAY_CACHE, else under EDITDECAY_HOME / a Ray job's lasting state dir, else .cache/editdecay (paths.py)
    cache_dir: str = Field(default_factory=default_cache_dir)
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    edit: EditConfig = EditConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _edited_layers_need_an_editor(self) -> "TrialConfig":
        if self.finetune.layers in ("edited", "non_edited") and self.edit.method == "none":
            raise ValueError(
                f"finetune.layers={self.finetune.layers} needs an editor: set edit.method to memit "
                "or alphaedit, or give finetune.layers as a list of layer indices"
            )
        return self


# --------------------------------------------------------------------------------------------
# Loading, overrides, error messages


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrialConfig:
    """Read YAML (if given), apply ``key.sub=value`` overrides, validate; one-line errors."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return validate_config(raw)


def validate_config(raw: dict[str, Any], schema: type[BaseModel] = TrialConfig) -> TrialConfig:
    check_keys(raw, schema)
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, schema)) from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"config: file not found: {p} (give the path of a YAML trial config)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config: {p}{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {p}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}': expected key=value, e.g. edit.method=alphaedit")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}': empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text  # not YAML: keep the literal string and let validation judge it
    return key, value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The config section class inside an annotation (``X``, ``X | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _section_type(arg)
            if found is not None:
                return found
    return None


def check_keys(raw: Any, schema: type[BaseModel], prefix: str = "") -> None:
    """Reject unknown keys with the list of allowed ones (clearer than pydantic's message)."""
    if not isinstance(raw, dict):
        return
    fields = schema.model_fields
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            allowed = ", ".join(fields)
            raise ConfigError(f"unknown config key '{dotted}'; allowed here: {allowed}")
        sub = _section_type(fields[key].annotation)
        if sub is not None and isinstance(value, dict):
            check_keys(value, sub, prefix=f"{dotted}.")


def format_validation_error(err: ValidationError, schema: type[BaseModel]) -> str:
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(x) for x in first["loc"] if not str(x).startswith(("literal[", "list[", "function-")))
    msg = first["msg"].replace("Value error, ", "")
    got = first.get("input")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if first["type"] == "literal_error":
        allowed = first.get("ctx", {}).get("expected", "")
        return f"config key '{loc}': got {got!r}; allowed: {allowed}{more}"
    if first["type"].startswith("value_error") or first["type"] == "assertion_error":
        where = f"config key '{loc}': " if loc else "config: "
        return f"{where}{msg}{more}"
    if isinstance(got, (dict, list)) and len(repr(got)) > 80:
        got = type(got).__name__
    where = f"config key '{loc}'" if loc else "config"
    return f"{where}: {msg.lower()} (got {got!r}){more}"


# --------------------------------------------------------------------------------------------
# Views of a validated config: flat params for trackers, stable hashes for caches


def flatten(obj: BaseModel | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"edit.method": "memit", ...}``: dotted keys, so tracker UIs can compare runs."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def stable_hash(obj: BaseModel | dict[str, Any] | list[Any], length: int = 12) -> str:
    """Hash of canonical JSON: equal configs give equal hashes across processes and machines."""
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def to_yaml(cfg: BaseModel, redact: bool = False) -> str:
    """The config as YAML; ``redact`` hides credentials in ``tracking.uri`` (for anything logged,
    printed or written next to results; not for a file a process reads the config back from)."""
    data = cfg.model_dump(mode="json")
    if redact and isinstance(data.get("tracking"), dict) and data["tracking"].get("uri"):
        from editdecay.tracking import redact_uri

        data["tracking"]["uri"] = redact_uri(data["tracking"]["uri"])
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
