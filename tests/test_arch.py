"""The architecture table against real (tiny, random-init) models of every supported family."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    GPT2Config,
    GPTJConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)
from transformers.pytorch_utils import Conv1D

from editdecay import arch
from editdecay.arch import ARCHITECTURES, arch_for, check_layers, get_module, mlp_out_dims, mlp_out_weight_view, num_layers
from editdecay.errors import ConfigError, ModelLoadError

VOCAB = 64
D_MODEL = 32
N_LAYERS = 3

_LLAMA_LIKE_KW = dict(
    vocab_size=VOCAB,
    hidden_size=D_MODEL,
    intermediate_size=80,
    num_hidden_layers=N_LAYERS,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def tiny_config(model_type: str):
    if model_type == "gpt2":
        return GPT2Config(vocab_size=VOCAB, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=4, n_positions=64, n_inner=72)
    if model_type == "gptj":
        return GPTJConfig(vocab_size=VOCAB, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=4, rotary_dim=4, n_positions=64, n_inner=72)
    if model_type == "llama":
        return LlamaConfig(**_LLAMA_LIKE_KW)
    if model_type == "mistral":
        return MistralConfig(**_LLAMA_LIKE_KW)
    if model_type == "qwen2":
        return Qwen2Config(**_LLAMA_LIKE_KW)
    raise AssertionError(model_type)


def d_mlp(config) -> int:
    return getattr(config, "n_inner", None) or getattr(config, "intermediate_size")


def llama3_shaped_config():
    """Llama-3 proportions in miniature: grouped-query attention and rope_theta 500000."""
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=224,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    )


def build(config) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module", params=list(ARCHITECTURES) + ["llama3-shaped"])
def model(request):
    config = llama3_shaped_config() if request.param == "llama3-shaped" else tiny_config(request.param)
    return build(config)


def test_every_family_has_a_test():
    assert set(ARCHITECTURES) == {"gpt2", "gptj", "llama", "mistral", "qwen2"}


def test_llama3_shaped_config_is_what_it_claims():
    config = llama3_shaped_config()
    assert config.num_key_value_heads < config.num_attention_heads
    # transformers 5 keeps rope_theta inside rope_parameters
    theta = getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"]
    assert theta == 500000.0


def test_paths_resolve(model):
    spec = arch_for(model)
    n = num_layers(model)
    assert n == model.config.num_hidden_layers
    blocks = arch.blocks(model)
    assert isinstance(blocks, torch.nn.ModuleList) and len(blocks) == n
    for layer in range(n):
        assert get_module(model, spec.block_path(layer)) is blocks[layer]
        for path in spec.mlp_in_paths(layer):
            assert hasattr(get_module(model, path), "weight")
        assert hasattr(get_module(model, spec.mlp_out_path(layer)), "weight")
    assert isinstance(get_module(model, spec.final_norm), torch.nn.Module)
    assert get_module(model, spec.lm_head).weight.shape[0] == model.config.vocab_size
    assert isinstance(get_module(model, spec.embed), torch.nn.Embedding)
    assert get_module(model, spec.embed) is model.get_input_embeddings()
    assert get_module(model, spec.lm_head) is model.get_output_embeddings()


def test_gated_mlp_lists_gate_first(model):
    spec = arch_for(model)
    if len(spec.mlp_in) > 1:
        assert spec.mlp_in[0].endswith("gate_proj")


def test_conv1d_flag_matches_module(model):
    spec = arch_for(model)
    for layer in range(num_layers(model)):
        module = arch.mlp_out_module(model, layer)
        assert isinstance(module, Conv1D) == spec.out_is_conv1d
        if not spec.out_is_conv1d:
            assert isinstance(module, torch.nn.Linear)


def test_mlp_out_view_shape_and_write_through(model):
    spec = arch_for(model)
    config = model.config
    d_model = config.hidden_size
    hidden = d_mlp(config)
    layer = num_layers(model) - 1
    view = mlp_out_weight_view(model, layer)
    assert tuple(view.shape) == (d_model, hidden)
    assert mlp_out_dims(model, layer) == (hidden, d_model)

    module = arch.mlp_out_module(model, layer)
    weight = module.weight
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        before_logits = model(ids).logits.clone()
        before = weight.detach().clone()
        view[0, 1] += 1.0
    changed = (weight.detach() != before).nonzero().tolist()
    if spec.out_is_conv1d:
        assert changed == [[1, 0]]  # Conv1D stores [in, out]
    else:
        assert changed == [[0, 1]]  # Linear stores [out, in]
    with torch.no_grad():
        after_logits = model(ids).logits
    assert not torch.allclose(before_logits, after_logits)
    with torch.no_grad():
        view[0, 1] -= 1.0  # undo, the fixture is shared


def test_peft_targets_are_leaf_module_names(model):
    spec = arch_for(model)
    leaf_names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if not list(mod.children())}
    for target in (*spec.peft_targets, *spec.attn_modules, *spec.mlp_modules):
        assert target in leaf_names, f"{target} not a leaf module of {spec.model_type}"
    # The MLP names are leaves of the table's MLP paths; attention names live under attention.
    assert set(spec.mlp_modules) <= {p.rsplit(".", 1)[-1] for p in (*spec.mlp_in, spec.mlp_out)}
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in spec.attn_modules:
            assert ".attn" in name or ".self_attn" in name, name
        if leaf in spec.mlp_modules:
            assert ".mlp." in name, name


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
def test_peft_targets_accepted_by_peft(model):
    from peft import LoraConfig, get_peft_model

    spec = arch_for(model)
    peft_model = get_peft_model(
        build(model.config), LoraConfig(r=2, lora_alpha=4, target_modules=list(spec.peft_targets))
    )
    wrapped = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(spec.peft_targets)


def test_check_layers(model):
    n = num_layers(model)
    assert check_layers([0, n - 1], model) == [0, n - 1]
    assert check_layers([-1, 0], model) == [0, n - 1]
    assert check_layers([-n], model.config) == [0]
    with pytest.raises(ConfigError, match=rf"0\.\.{n - 1}"):
        check_layers([n], model)
    with pytest.raises(ConfigError, match=rf"0\.\.{n - 1}"):
        check_layers([-n - 1], model)
    with pytest.raises(ConfigError, match="repeat"):
        check_layers([1, 1 - n], model)
    with pytest.raises(ConfigError, match="edit.layers"):
        check_layers(["1"], model)


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_arch_for_accepts_model_config_and_string(model_type):
    config = tiny_config(model_type)
    assert arch_for(config).model_type == model_type
    assert arch_for(model_type) is ARCHITECTURES[model_type]
    assert num_layers(config) == N_LAYERS


def test_unsupported_bert_model():
    config = BertConfig(vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    bert = AutoModelForCausalLM.from_config(config.__class__(**{**config.to_dict(), "is_decoder": True}))
    for obj in (config, bert):
        with pytest.raises(ModelLoadError) as info:
            arch_for(obj)
        msg = str(info.value)
        assert "'bert'" in msg and "\n" not in msg
        for supported in ARCHITECTURES:
            assert supported in msg
    with pytest.raises(ModelLoadError):
        num_layers(config)


def test_unsupported_string():
    with pytest.raises(ModelLoadError, match="'mamba' is not supported; supported: gpt2, gptj, llama, mistral, qwen2"):
        arch_for("mamba")
