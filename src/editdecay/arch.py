"""The architecture table: every fact about a model family that editing or fine-tuning needs.

Research editing code guesses weight orientation from tensor shapes and keeps per-model JSON
files; we keep one explicit table instead. Module paths are relative to the model returned by
``AutoModelForCausalLM`` (e.g. ``GPT2LMHeadModel``), and ``{}`` in ``blocks`` takes the layer index.

Orientation: a ``torch.nn.Linear`` stores ``weight`` as ``[out_features, in_features]``; GPT-2's
``Conv1D`` stores it transposed, ``[in_features, out_features]``. :func:`mlp_out_weight_view`
always returns the ``[out, in]`` view so editors write ``W += Δ`` one way for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from editdecay.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:  # annotations only: the preflight reads this table before torch is imported
    import torch


@dataclass(frozen=True)
class ArchSpec:
    model_type: str
    blocks: str  # ModuleList of transformer blocks
    mlp_in: tuple[str, ...]  # MLP input projection(s), relative to a block (gate first for gated MLPs)
    mlp_out: str  # MLP output projection, relative to a block; MEMIT/AlphaEdit edit its weight
    out_is_conv1d: bool  # GPT-2 Conv1D: weight stored [in, out]
    final_norm: str
    lm_head: str
    embed: str
    attn_modules: tuple[str, ...]  # attention projections (leaf names, for PEFT)
    mlp_modules: tuple[str, ...]  # MLP projections (leaf names, for PEFT)
    peft_targets: tuple[str, ...]  # the study's LoRA/DoRA target modules for this family
    n_layers_attr: str  # config attribute holding the layer count

    def block_path(self, layer: int) -> str:
        return f"{self.blocks}.{layer}"

    def mlp_out_path(self, layer: int) -> str:
        return f"{self.blocks}.{layer}.{self.mlp_out}"

    def mlp_in_paths(self, layer: int) -> tuple[str, ...]:
        return tuple(f"{self.blocks}.{layer}.{m}" for m in self.mlp_in)


_LLAMA_LIKE = dict(
    blocks="model.layers",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out="mlp.down_proj",
    out_is_conv1d=False,
    final_norm="model.norm",
    lm_head="lm_head",
    embed="model.embed_tokens",
    attn_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    mlp_modules=("gate_proj", "up_proj", "down_proj"),
    # LLM-Adapters / the study's Llama recipe: q, k, v, up, down.
    peft_targets=("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"),
    n_layers_attr="num_hidden_layers",
)

ARCHITECTURES: dict[str, ArchSpec] = {
    "gpt2": ArchSpec(
        model_type="gpt2",
        blocks="transformer.h",
        mlp_in=("mlp.c_fc",),
        mlp_out="mlp.c_proj",
        out_is_conv1d=True,
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        embed="transformer.wte",
        attn_modules=("c_attn",),  # attn.c_proj shares its leaf name with mlp.c_proj: not listed
        mlp_modules=("c_fc",),
        peft_targets=("c_attn",),
        n_layers_attr="n_layer",
    ),
    "gptj": ArchSpec(
        model_type="gptj",
        blocks="transformer.h",
        mlp_in=("mlp.fc_in",),
        mlp_out="mlp.fc_out",
        out_is_conv1d=False,
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        embed="transformer.wte",
        attn_modules=("q_proj", "k_proj", "v_proj", "out_proj"),
        mlp_modules=("fc_in", "fc_out"),
        peft_targets=("q_proj", "v_proj"),
        n_layers_attr="n_layer",
    ),
    "llama": ArchSpec(model_type="llama", **_LLAMA_LIKE),  # Llama-2, Llama-3/3.1, R1-Distill-Llama
    "mistral": ArchSpec(model_type="mistral", **_LLAMA_LIKE),
    "qwen2": ArchSpec(model_type="qwen2", **_LLAMA_LIKE),
}


def arch_for(model_or_config) -> ArchSpec:
    """The table row for a model, a config, or a ``model_type`` string; clear error if unsupported."""
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", None)
    spec = ARCHITECTURES.get(model_type)  # type: ignore[arg-type]
    if spec is None:
        raise ModelLoadError(
            f"model_type '{model_type}' is not supported; supported: {', '.join(ARCHITECTURES)} "
            "(add a row to editdecay/arch.py ARCHITECTURES)"
        )
    return spec


def num_layers(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    return int(getattr(config, arch_for(config).n_layers_attr))


def check_layers(layers, model_or_config, key: str = "edit.layers") -> list[int]:
    """Validate layer indices against the model; negative indices count from the end."""
    n = num_layers(model_or_config)
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ConfigError(f"{key}: layer {layer!r} is not an integer")
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx < n:
            raise ConfigError(f"{key}: layer {layer} is out of range; this model has layers 0..{n - 1}")
        out.append(idx)
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}: layers {list(layers)} repeat an index")
    return sorted(out)


def get_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ModelLoadError(
            f"module '{path}' not found in {type(model).__name__}; the architecture table row for "
            f"'{arch_for(model).model_type}' does not match this model"
        ) from None


def blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    return get_module(model, arch_for(model).blocks)  # type: ignore[return-value]


def mlp_out_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    return get_module(model, arch_for(model).mlp_out_path(layer))


def mlp_out_weight_view(model: torch.nn.Module, layer: int) -> torch.Tensor:
    """The MLP output projection's weight as ``[out_features, in_features]`` (a view, not a copy).

    In-place updates through the view change the model: ``view += delta`` works for both
    ``nn.Linear`` and GPT-2 ``Conv1D`` because the transpose is explicit here, from the table.
    """
    spec = arch_for(model)
    weight = mlp_out_module(model, layer).weight
    return weight.T if spec.out_is_conv1d else weight


def mlp_out_dims(model: torch.nn.Module, layer: int) -> tuple[int, int]:
    """(in_features, out_features) of the MLP output projection: (d_mlp, d_model)."""
    out_features, in_features = mlp_out_weight_view(model, layer).shape
    return in_features, out_features
