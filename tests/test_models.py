"""load_model / model_fingerprint on tiny models saved to disk; one-line load errors. No downloads."""

from __future__ import annotations

import json
import time

import pytest
import torch
from tokenizers import Tokenizer, models as tok_models, pre_tokenizers
from transformers import AutoModelForCausalLM, BertConfig, BertLMHeadModel, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

from editdecay.arch import arch_for, mlp_out_weight_view
from editdecay.config import ModelConfig
from editdecay.errors import ModelLoadError
from editdecay.models import _hub_reachable, load_model, model_fingerprint

WORDS = ["<unk>", "<eos>", "the", "capital", "of", "france", "is", "paris", "germany", "berlin"]
EOS_ID = 1
IDS = torch.tensor([[2, 3, 4, 5, 6, 7], [2, 3, 4, 8, 6, 9]])


def make_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>")


def gpt2_config(**kw) -> GPT2Config:
    base = dict(vocab_size=len(WORDS), n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=EOS_ID, eos_token_id=EOS_ID)
    return GPT2Config(**{**base, **kw})


def llama_config() -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=None,
        eos_token_id=EOS_ID,
    )


def build(config, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids.to(model.device)).logits.float().cpu()


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def saved(request, tmp_path_factory):
    """(directory, original model) for a tiny model + tokenizer saved with save_pretrained."""
    model = build(gpt2_config() if request.param == "gpt2" else llama_config())
    out = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    return out, model


# --------------------------------------------------------------------------------------------
# Loading


def test_saved_with_safetensors(saved):
    directory, _ = saved
    assert (directory / "model.safetensors").is_file()
    assert not list(directory.glob("*.bin"))


def test_load_roundtrip_float32(saved):
    directory, original = saved
    model, tokenizer = load_model(ModelConfig(name=str(directory), device="cpu"))
    assert type(model) is type(original)
    assert arch_for(model).model_type == original.config.model_type
    assert model.dtype == torch.float32
    assert not model.training and all(not m.training for m in model.modules())
    assert model.device.type == "cpu"
    assert torch.equal(logits(model), logits(original))
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"
    assert tokenizer.pad_token_id == EOS_ID
    assert model.generation_config.pad_token_id == EOS_ID


def test_load_bfloat16(saved):
    directory, original = saved
    model, _ = load_model(ModelConfig(name=str(directory), dtype="bfloat16", device="cpu"))
    assert model.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    reference = build(original.config)  # same seed, same weights
    reference.load_state_dict(original.state_dict())
    assert torch.allclose(logits(model), logits(reference.to(torch.bfloat16)), atol=1e-2)


def test_load_dtype_auto_takes_the_saved_dtype(saved):
    directory, _ = saved
    model, _ = load_model(ModelConfig(name=str(directory), dtype="auto", device="auto"))
    assert model.dtype == torch.float32  # saved in float32


def test_path_argument_overrides_name(saved):
    directory, original = saved
    model, _ = load_model(ModelConfig(name="gpt2-xl"), path=directory)
    assert torch.equal(logits(model), logits(original))


def test_batched_padding_works(saved):
    directory, original = saved
    model, tokenizer = load_model(ModelConfig(name=str(directory), device="cpu"))
    batch = tokenizer(["the capital of france is", "paris"], padding=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, 5)
    assert batch.attention_mask.sum().item() == 6
    with torch.no_grad():
        out = model(**batch).logits
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# Fingerprint


def test_fingerprint_is_stable_hex():
    model = build(gpt2_config())
    fp = model_fingerprint(model)
    assert fp == model_fingerprint(model)
    assert len(fp) == 64 and int(fp, 16) >= 0


def test_fingerprint_differs_across_seeds():
    assert model_fingerprint(build(gpt2_config(), seed=0)) != model_fingerprint(build(gpt2_config(), seed=1))
    assert model_fingerprint(build(llama_config(), seed=0)) != model_fingerprint(build(llama_config(), seed=1))


def test_fingerprint_same_after_save_and_reload(saved):
    directory, original = saved
    model, _ = load_model(ModelConfig(name=str(directory), device="cpu"))
    assert model_fingerprint(model) == model_fingerprint(original)


def test_fingerprint_depends_on_dtype(saved):
    directory, original = saved
    model, _ = load_model(ModelConfig(name=str(directory), dtype="bfloat16", device="cpu"))
    assert model_fingerprint(model) != model_fingerprint(original)


@pytest.mark.parametrize("make_config", [gpt2_config, llama_config])
def test_fingerprint_sees_one_changed_mlp_out_weight(make_config):
    model = build(make_config())
    before = model_fingerprint(model)
    with torch.no_grad():
        mlp_out_weight_view(model, 1)[3, 7] += 1e-3
    assert model_fingerprint(model) != before


def test_fingerprint_of_a_large_tensor_is_sampled_and_sees_dense_changes():
    # Embedding 40000 x 32 = 1.28M elements: above the full-hash limit, hashed by a strided sample.
    model = build(gpt2_config(vocab_size=40000))
    start = time.perf_counter()
    before = model_fingerprint(model)
    assert time.perf_counter() - start < 5.0
    with torch.no_grad():
        model.transformer.wte.weight.mul_(1.0001)  # dense, like an edit or fine-tuning
    assert model_fingerprint(model) != before


# --------------------------------------------------------------------------------------------
# Errors: one line, naming the key and the fix


def one_line_error(cfg: ModelConfig, **kw) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(cfg, **kw)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert info.value.__cause__ is None
    return msg


def _cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def test_hub_id_without_network_fails_fast():
    from huggingface_hub import is_offline_mode

    if is_offline_mode():
        pytest.skip("HF_HUB_OFFLINE is set: the message names offline mode instead")
    if _hub_reachable():
        pytest.skip("the hub is reachable from here; this test is about the no-network case")
    if _cached("gpt2-xl"):
        pytest.skip("gpt2-xl is in the local cache")
    start = time.perf_counter()
    msg = one_line_error(ModelConfig(name="gpt2-xl"))
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"no-network failure took {elapsed:.1f}s"
    assert msg == (
        "model.name: cannot load 'gpt2-xl': not in the local Hugging Face cache and the hub is unreachable "
        "(no network); download it on a machine with network and pass model.name=/local/dir"
    )


def test_hub_id_with_local_files_only_names_offline_mode():
    # local_files_only: never touches the network, whatever this machine can reach.
    msg = one_line_error(ModelConfig(name="editdecay-tests/no-such-model-7f3a", local_files_only=True))
    assert "model.name" in msg and "editdecay-tests/no-such-model-7f3a" in msg
    assert "model.local_files_only" in msg and "model.name=/local/dir" in msg


def test_missing_local_directory(tmp_path):
    missing = tmp_path / "nope" / "model"
    msg = one_line_error(ModelConfig(name=str(missing)))
    assert msg.startswith("model.name:") and str(missing) in msg and "does not exist" in msg


def test_directory_without_config_json(tmp_path):
    make_tokenizer().save_pretrained(tmp_path)
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "config.json" in msg and str(tmp_path) in msg


def test_file_instead_of_directory(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    msg = one_line_error(ModelConfig(name=str(f)))
    assert msg.startswith("model.name:") and "not a model directory" in msg


def test_directory_without_tokenizer(tmp_path):
    build(gpt2_config()).save_pretrained(tmp_path)
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "tokenizer" in msg


def test_directory_without_weights(tmp_path):
    gpt2_config().save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "weights" in msg


def test_corrupt_weights_file(tmp_path):
    build(gpt2_config()).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"garbage" * 10)
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "weights" in msg


def test_weights_missing_a_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    build(llama_config()).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "model.layers.1.mlp.down_proj.weight" in msg


def test_weights_do_not_fit_the_config(tmp_path):
    build(gpt2_config()).save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_embd"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "do not fit its config.json" in msg


def test_unsupported_model_type_in_saved_directory(tmp_path):
    config = BertConfig(
        vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, is_decoder=True
    )
    BertLMHeadModel(config).save_pretrained(tmp_path / "bert")
    make_tokenizer().save_pretrained(tmp_path / "bert")
    msg = one_line_error(ModelConfig(name=str(tmp_path / "bert")))
    assert msg.startswith("model.name:") and "'bert' is not supported" in msg
    assert "supported: gpt2, gptj, llama, mistral, qwen2" in msg and "ARCHITECTURES" in msg

    # The check runs on the config alone, before weights (or tokenizer) are read.
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text(json.dumps(config.to_dict()))
    assert "'bert' is not supported" in one_line_error(ModelConfig(name=str(tmp_path / "config_only")))


def test_config_json_without_model_type(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    msg = one_line_error(ModelConfig(name=str(tmp_path)))
    assert msg.startswith("model.name:") and "config" in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda(saved):
    directory, _ = saved
    msg = one_line_error(ModelConfig(name=str(directory), device="cuda"))
    assert msg.startswith("model.device:") and "model.device=cpu" in msg


def test_invalid_hub_id():
    msg = one_line_error(ModelConfig(name="not a valid id", local_files_only=True))
    assert msg.startswith("model.name:") and "not a valid id" in msg
