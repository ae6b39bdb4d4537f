"""Fine-tuning engine: presets, layers, PEFT on GPT-2 and Llama, data, full FT with DeepSpeed on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from editdecay.config import EditConfig, FinetuneConfig, load_config
from editdecay.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


def _cfg(tiny_cfg, *overrides: str):
    return load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={tiny_cfg.cache_dir}", *overrides])


@pytest.fixture(scope="module")
def llama_dir(toy_model_dir, tmp_path_factory) -> Path:
    """A tiny random-init Llama with the toy world's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(toy_model_dir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------
# Recipes and layers


def test_paper_presets():
    from editdecay.finetune.recipe import resolve_recipe

    lora = resolve_recipe(FinetuneConfig(method="dora", preset="paper"))
    assert (lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.lr, lora.epochs, lora.batch_size,
            lora.cutoff_len, lora.warmup_steps) == (32, 64.0, 0.05, 2e-4, 3.0, 16, 256, 100)
    full = resolve_recipe(FinetuneConfig(method="full", preset="paper"))
    assert (full.lr, full.epochs, full.batch_size, full.warmup_ratio, full.max_grad_norm, full.weight_decay) == (
        5e-6, 2.0, 32, 0.1, 1.0, 0.001)
    assert full.micro_batch_size * full.grad_accum == 32  # batch 32 through accumulation
    assert resolve_recipe(FinetuneConfig(method="full", preset="paper"), world_size=2).grad_accum == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_recipe(FinetuneConfig(method="full", batch_size=10, micro_batch_size=4))
    with pytest.raises(ConfigError, match="nothing to fine-tune"):
        resolve_recipe(FinetuneConfig(method="none"))


def test_layer_selection(toy_model):
    from editdecay.finetune.layers import resolve_layers

    model, _ = toy_model
    edit = EditConfig(method="memit", layers=[1, 2])
    assert resolve_layers("all", model) == [0, 1, 2, 3]
    edited = resolve_layers("edited", model, edit)
    rest = resolve_layers("non_edited", model, edit)
    assert edited == [1, 2] and rest == [0, 3]
    assert sorted(edited + rest) == [0, 1, 2, 3] and not set(edited) & set(rest)
    assert resolve_layers("edited", model, edit, explicit_edited=[3]) == [3]  # the trial's own layers win
    assert resolve_layers([-1, 0], model) == [0, 3]
    with pytest.raises(ConfigError, match=r"layer 7 is out of range; this model has layers 0..3"):
        resolve_layers([7], model)
    with pytest.raises(ConfigError, match="needs an edit config"):
        resolve_layers("edited", model, EditConfig(method="none"))
    with pytest.raises(ConfigError, match="every layer"):
        resolve_layers("non_edited", model, EditConfig(layers=[0, 1, 2, 3]))


# --------------------------------------------------------------------------------------------
# PEFT


def _trainable(model) -> dict[str, int]:
    return {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}


def _adapted_modules(params) -> set[str]:
    """Leaf names of the adapted modules ("q_proj" from "...self_attn.q_proj.lora_A.default.weight")."""
    return {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in params}


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_peft_gpt2_conv1d(toy_model, method):
    from editdecay.finetune.adapters import adapted_layers, apply_adapters
    from editdecay.finetune.recipe import resolve_recipe

    model, _ = toy_model
    ft = FinetuneConfig(method=method, lora_r=4)
    peft_model = apply_adapters(model, ft, resolve_recipe(ft), [1, 3])
    assert peft_model.peft_config["default"].fan_in_fan_out  # Conv1D
    params = _trainable(peft_model)
    d = model.config.n_embd
    # c_attn: [d -> 3d]; LoRA A r x d, B 3d x r; DoRA adds a magnitude per output feature.
    per_layer = 4 * d + 3 * d * 4 + (3 * d if method == "dora" else 0)
    assert sum(params.values()) == 2 * per_layer
    assert adapted_layers(peft_model) == {1, 3}
    assert all(".c_attn." in n for n in params)
    x = torch.tensor([[2, 5, 6, 7]])
    assert peft_model(input_ids=x).logits.shape[-1] == model.config.vocab_size


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_peft_llama(llama_dir, method):
    from transformers import AutoModelForCausalLM

    from editdecay.finetune.adapters import adapted_layers, apply_adapters
    from editdecay.finetune.recipe import resolve_recipe

    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    ft = FinetuneConfig(method=method, lora_r=2)
    peft_model = apply_adapters(model, ft, resolve_recipe(ft), [0, 2])
    params = _trainable(peft_model)
    h, m, r = 64, 128, 2
    shapes = {"q_proj": (h, h), "k_proj": (h, h), "v_proj": (h, h), "up_proj": (h, m), "down_proj": (m, h)}
    per_layer = sum(r * (i + o) + (o if method == "dora" else 0) for i, o in shapes.values())
    assert sum(params.values()) == 2 * per_layer
    assert adapted_layers(peft_model) == {0, 2}
    assert _adapted_modules(params) == set(shapes)
    assert not peft_model.peft_config["default"].fan_in_fan_out

    # attention_only (the paper's code): adapters on q, k, v only.
    model = AutoModelForCausalLM.from_pretrained(llama_dir)
    ft = FinetuneConfig(method=method, lora_r=2, attention_only=True)
    names = _trainable(apply_adapters(model, ft, resolve_recipe(ft), [1]))
    assert _adapted_modules(names) == {"q_proj", "k_proj", "v_proj"}


def test_peft_bad_target_modules(toy_model):
    from editdecay.finetune.adapters import apply_adapters
    from editdecay.finetune.recipe import resolve_recipe

    model, _ = toy_model
    ft = FinetuneConfig(target_modules=["q_proj"])
    with pytest.raises(ConfigError, match="q_proj not found in this gpt2 model"):
        apply_adapters(model, ft, resolve_recipe(ft), [0])


# --------------------------------------------------------------------------------------------
# Data


def test_templates_and_labels(toy_model):
    from editdecay.finetune.data import IGNORE_INDEX, encode_row, render_prompt

    _, tok = toy_model
    row = {"instruction": "is Zorbia a country ?", "input": "", "output": "the correct answer is true", "answer": "true"}
    assert render_prompt(row, "alpaca").endswith("### Instruction:\nis Zorbia a country ?\n\n### Response:\n")
    assert render_prompt({**row, "input": "ctx"}, "alpaca").count("### Input:\nctx") == 1
    assert render_prompt(row, "qa") == "Question: is Zorbia a country ?\nAnswer:"
    ex, n_prompt = encode_row(row, tok, "qa", 64, train_on_inputs=False)
    n_response = len(tok("the correct answer is true", add_special_tokens=False)["input_ids"]) + 1  # + eos
    assert len(ex["input_ids"]) == n_prompt + n_response
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["labels"][-1] == tok.eos_token_id
    ex2, _ = encode_row(row, tok, "qa", 64, train_on_inputs=True)
    assert ex2["labels"] == ex2["input_ids"]
    assert encode_row(row, tok, "qa", n_prompt, False)[0] is None  # the prompt alone fills the cutoff


def test_data_sources(toy_model, tiny_cfg, tmp_path):
    from editdecay.config import FinetuneDataConfig
    from editdecay.finetune.data import build_finetune_data, encode_pair, load_rows, render_prompt

    _, tok = toy_model
    world = build_finetune_data(FinetuneDataConfig(val_size=0.1), tok, "gpt2", 128, 0, tiny_cfg.world)
    assert world.template == "qa" and len(world.val) == round(0.1 * world.n_rows)
    assert len(world.train) + len(world.val) == world.n_rows
    assert build_finetune_data(FinetuneDataConfig(), tok, "llama", 128, 0, tiny_cfg.world).template == "alpaca"

    hotpot = tmp_path / "hotpot.json"
    hotpot.write_text(json.dumps([{"question": "Where is Stamere ?", "answer": "Zorbia",
                                   "context": [["Stamere", ["Stamere is a city .", " It is big ."]]]}]))
    rows = load_rows(FinetuneDataConfig(source="file", path=str(hotpot), format="hotpotqa"))
    assert rows[0]["instruction"] == "Where is Stamere ?" and rows[0]["output"] == "Zorbia"
    assert rows[0]["input"] == "Stamere: Stamere is a city . It is big ."

    pc = tmp_path / "pc.jsonl"
    pc.write_text('{"prompt": "The capital of X is", "completion": " Y ."}\n')
    rows = load_rows(FinetuneDataConfig(source="file", path=str(pc), format="prompt_completion"))
    assert rows[0]["prompt"] == "The capital of X is"

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "hi", "input": ""}\n')
    with pytest.raises(DataError, match=r"lacks field\(s\) output"):
        load_rows(FinetuneDataConfig(source="file", path=str(bad)))
    with pytest.raises(DataError, match="cutoff_len=8 is shorter than the prompt"):
        build_finetune_data(FinetuneDataConfig(cutoff_len=8), tok, "gpt2", 8, 0, tiny_cfg.world)
    # People's names are two words: their prompts are a token longer, and this cutoff drops just them.
    rows = load_rows(FinetuneDataConfig(max_examples=20), tiny_cfg.world)
    shortest = min(len(encode_pair(tok, render_prompt(r, "qa"))[0]) for r in rows)
    dropped = build_finetune_data(FinetuneDataConfig(max_examples=20, too_long="drop"), tok, "gpt2", shortest + 1, 0,
                                  tiny_cfg.world)
    assert 0 < dropped.n_dropped < 20 and len(dropped.train) + len(dropped.val) + dropped.n_dropped == 20


# --------------------------------------------------------------------------------------------
# End-to-end runs


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_run_merge_curve_and_resume(tiny_cfg, toy_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from editdecay.finetune.run import finetune, load_finetuned, partial_dir

    cfg = _cfg(tiny_cfg, "finetune.method=lora", "finetune.layers=[1,2]", "finetune.max_steps=4",
               "finetune.merge=true", "finetune.save_strategy=steps", "finetune.save_steps=2",
               "finetune.curve_every=1", "finetune.lr=0.01", "finetune.logging_steps=1")
    out = tmp_path / "ft"
    calls: list[int] = []

    def failing_eval(model):  # crash mid-run: the partial directory keeps the step-2 checkpoint
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated crash")
        return {"es": 1.0}

    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune(cfg, toy_model_dir, out, evaluate_fn=failing_eval)
    assert not out.exists() and (partial_dir(out) / "checkpoints" / "checkpoint-2").is_dir()

    def evaluate(model):
        return {"es": float(model.training is False)}

    result = finetune(cfg, toy_model_dir, out, evaluate_fn=evaluate)
    assert not partial_dir(out).exists()
    assert [row["step"] for row in result.curve] == [2, 3, 4]  # resumed at step 2
    assert all(row["es"] == 1.0 for row in result.curve)  # evaluate_fn sees eval mode
    assert json.loads((out / "decay_curve.json").read_text()) == result.curve
    assert (out / "decay_curve.csv").read_text().splitlines()[0] == "step,epoch,es"
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoints").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["layers"] == [1, 2]

    ids = torch.tensor([[2, 10, 11, 12, 13]])
    adapted, _ = load_finetuned(out, toy_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(toy_model_dir).eval()
    assert torch.allclose(_logits(adapted, ids), _logits(merged, ids), atol=1e-4)
    assert not torch.allclose(_logits(base, ids), _logits(merged, ids), atol=1e-4)  # training did something


@pytest.mark.slow
def test_full_zero2_selective_layers(tiny_cfg, toy_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from editdecay.finetune.run import finetune

    cfg = _cfg(tiny_cfg, "finetune.method=full", "finetune.deepspeed=zero2", "finetune.layers=[1]",
               "finetune.max_steps=5", "finetune.lr=0.002", "finetune.logging_steps=1", "finetune.save_strategy=none")
    result = finetune(cfg, toy_model_dir, tmp_path / "ft")
    assert result.metrics["last_loss"] < result.metrics["first_loss"]
    before = load_file(toy_model_dir / "model.safetensors")
    after = load_file(result.model_path / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("transformer.h.1.") for k in changed)  # frozen layers bit-identical
    AutoModelForCausalLM.from_pretrained(result.model_path)
    assert not torch.distributed.is_initialized()  # the process group was torn down


@pytest.mark.slow
def test_full_zero3_saves_real_weights(tiny_cfg, toy_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from editdecay.finetune.run import finetune

    cfg = _cfg(tiny_cfg, "finetune.method=full", "finetune.deepspeed=zero3", "finetune.max_steps=5",
               "finetune.lr=0.002", "finetune.logging_steps=1", "finetune.save_strategy=none")
    result = finetune(cfg, toy_model_dir, tmp_path / "ft")
    assert result.metrics["last_loss"] < result.metrics["first_loss"]
    assert not is_deepspeed_zero3_enabled()  # no ZeRO-3 state leaks into later loads
    model = AutoModelForCausalLM.from_pretrained(result.model_path)
    base = AutoModelForCausalLM.from_pretrained(toy_model_dir)
    w, w0 = model.transformer.h[0].mlp.c_fc.weight, base.transformer.h[0].mlp.c_fc.weight
    assert w.shape == w0.shape and not torch.equal(w, w0)


@pytest.mark.slow
def test_two_process_deepspeed_torchrun(tiny_cfg, toy_model_dir, tmp_path):
    out = tmp_path / "ft2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "editdecay",
           "finetune", str(REPO / "configs" / "tiny.yaml"), f"cache_dir={tiny_cfg.cache_dir}", "finetune.method=full",
           "finetune.deepspeed=zero2", "finetune.max_steps=3", "finetune.batch_size=8", "finetune.micro_batch_size=4",
           "finetune.logging_steps=1", "finetune.save_strategy=none", "finetune.lr=0.002",
           "--model", str(toy_model_dir), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["recipe"]["grad_accum"] == 1  # 8 = 4 x 2 ranks
    assert (out / "model" / "model.safetensors").is_file()


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no output directory


def _error_lines(stderr: str) -> list[str]:
    """Our lines on stderr (progress bars of weight loading share it)."""
    return [line for line in stderr.splitlines() if line.startswith("editdecay")]


@pytest.mark.parametrize("overrides, message", [
    (["finetune.method=qlora"], "config key 'finetune.method': got 'qlora'"),
    (["finetune.layers=[9]"], "finetune.layers: layer 9 is out of range"),
    (["edit.method=none", "finetune.layers=edited"], "finetune.layers=edited needs an editor"),
    (["finetune.lora_r=0"], "config key 'finetune.lora_r'"),
    (["finetune.data.cutoff_len=8"], "cutoff_len=8 is shorter than the prompt"),
    (["finetune.method=full", "finetune.precision=fp16"], "fp16 needs a CUDA GPU"),
    (["finetune.method=full", "finetune.deepspeed=zero9"], "finetune.deepspeed: 'zero9' is not a file"),
    (["finetune.data.source=file", "finetune.data.path=MISSING"], "finetune.data.path: 'MISSING' does not exist"),
])
def test_bad_input_cli(tiny_cfg, toy_model_dir, tmp_path, capsys, overrides, message):
    from editdecay.cli import main

    if torch.cuda.is_available() and "fp16" in " ".join(overrides):
        pytest.skip("fp16 is allowed on a GPU")
    out = tmp_path / "out"
    code = main(["finetune", str(REPO / "configs" / "tiny.yaml"), f"cache_dir={tiny_cfg.cache_dir}", *overrides,
                 "--model", str(toy_model_dir), "--out", str(out)])
    err = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []  # neither out nor .out.partial


def test_bad_dataset_cli(tiny_cfg, toy_model_dir, tmp_path, capsys):
    from editdecay.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text('{"instruction": "is Zorbia a country ?", "answer": "true"}\n')
    code = main(["finetune", f"cache_dir={tiny_cfg.cache_dir}", "finetune.data.source=file", f"finetune.data.path={data}",
                 "--model", str(toy_model_dir), "--out", str(tmp_path / "out")])
    err = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "lacks field(s) output" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]


@pytest.mark.slow
def test_trial_finetuning_on_two_ranks_via_the_launcher(tiny_cfg, toy_model_dir, tmp_path):
    """finetune.num_processes=2: what a sweep trial holding 2 GPUs runs (here 2 CPU ranks over gloo)."""
    from editdecay.config import load_config
    from editdecay.finetune.launch import finetune_multiprocess

    cfg = load_config(REPO / "configs" / "tiny.yaml", [
        f"cache_dir={tiny_cfg.cache_dir}", "finetune.method=full", "finetune.deepspeed=zero2", "finetune.num_processes=2",
        "finetune.layers=edited", "finetune.max_steps=2", "finetune.batch_size=8", "finetune.micro_batch_size=4",
        "finetune.save_strategy=none"])
    result = finetune_multiprocess(cfg, toy_model_dir, tmp_path / "ft", edited_layers=[1], timeout=300)
    assert result.metrics["steps"] == 2 and result.metrics["recipe"]["grad_accum"] == 1  # 8 = 4 x 2 ranks
    assert result.layers == [1] and (result.model_path / "model.safetensors").is_file()
    # A failing launch is one line naming the log, and leaves no output directory.
    bad = cfg.model_copy(update={"finetune": cfg.finetune.model_copy(update={"deepspeed": str(tmp_path / "none.json")})})
    from editdecay.errors import EditDecayError

    with pytest.raises(EditDecayError, match="finetune on 2 processes failed"):
        finetune_multiprocess(bad, toy_model_dir, tmp_path / "ft_bad", timeout=300)
    assert not (tmp_path / "ft_bad").exists()
