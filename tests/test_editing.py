"""The editing engine on real (toy and random-init) models: solves, orientation, AlphaEdit's
null space, sessions, revert, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from editdecay.arch import mlp_out_module, mlp_out_weight_view
from editdecay.config import load_config
from editdecay.editing.alphaedit import AlphaEditSession, nullspace_projector
from editdecay.editing.common import EditError
from editdecay.editing.deltas import EditDeltas, LayerDelta
from editdecay.editing.hparams import EditHparams, default_edit_layers, resolve_hparams
from editdecay.editing.registry import get_editor, run_edits
from editdecay.editing.stats import accumulate_second_moments, second_moments
from editdecay.errors import ConfigError, EditDecayError

from conftest import REPO, TEST_CACHE

N_STATS = 600  # world documents for the toy model's statistics (a few seconds, cached)


@pytest.fixture(scope="module")
def stats_cfg():
    return load_config(REPO / "configs" / "tiny.yaml", [f"cache_dir={TEST_CACHE}", f"edit.stats.n_samples={N_STATS}"])


@pytest.fixture(scope="module")
def toy_records(toy_world):
    return toy_world.counterfact_records()


def moments(model, tok, cfg, layers):
    return second_moments(model, tok, cfg, list(layers), progress=False)


def fast_hp(model, cfg, **kw) -> EditHparams:
    """Toy defaults with fewer z steps: the mechanics tests need an edit, not a good one."""
    return dataclasses.replace(resolve_hparams(model, cfg.edit), v_num_grad_steps=5, **kw)


# --------------------------------------------------------------------------------------------
# Closed-form solves against least squares


def test_memit_solve_equals_lstsq_of_its_objective():
    # min_Δ ‖ΔK − R‖² + λ tr(ΔCΔᵀ)  ⇔  least squares [Kᵀ; √λ Lᵀ] Δᵀ = [Rᵀ; 0] with C = LLᵀ.
    g = torch.Generator().manual_seed(0)
    d_in, d_out, n, lam = 12, 7, 5, 3.0
    K = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    R = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    X = torch.randn(d_in, 40, generator=g, dtype=torch.float64)
    C = X @ X.T / 40
    session = object.__new__(AlphaEditSession.__mro__[1])  # a MemitSession without a model
    session.hp, session.C = EditHparams(layers=(0,), mom2_weight=lam), {0: C}
    delta = R @ session.solve(0, K, R).T
    L = torch.linalg.cholesky(C)
    A = torch.cat([K.T, lam**0.5 * L.T])
    B = torch.cat([R.T, torch.zeros(d_in, d_out, dtype=torch.float64)])
    expected = torch.linalg.lstsq(A, B).solution.T
    torch.testing.assert_close(delta, expected, rtol=1e-9, atol=1e-9)


def test_alphaedit_solve_equals_lstsq_over_range_of_P():
    # min over Y = PZ of ‖KᵀY − Rᵀ‖² + ‖K_pᵀY‖² + α‖Y‖², with Δ = Yᵀ.
    g = torch.Generator().manual_seed(1)
    d_in, d_out, n, alpha = 10, 6, 4, 0.7
    K = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    Kp = torch.randn(d_in, 3, generator=g, dtype=torch.float64)
    R = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    X = torch.randn(d_in, 6, generator=g, dtype=torch.float64)  # rank 6: a 4-dim null space
    P = nullspace_projector(X @ X.T, 1e-8)
    assert torch.linalg.matrix_rank(P) == 4
    session = object.__new__(AlphaEditSession)
    session.hp = EditHparams(layers=(0,), alpha=alpha)
    session.P, session.prev_kk = {0: P}, {0: Kp @ Kp.T}
    delta = R @ session.solve(0, K, R).T
    A = torch.cat([K.T @ P, Kp.T @ P, alpha**0.5 * P])
    B = torch.cat([R.T, torch.zeros(3 + d_in, d_out, dtype=torch.float64)])
    Z = torch.linalg.lstsq(A, B, driver="gelsd").solution
    torch.testing.assert_close(delta, (P @ Z).T, rtol=1e-7, atol=1e-9)


def test_nullspace_projector_that_would_be_zero_is_an_error():
    with pytest.raises(EditError, match="projector would be zero"):
        nullspace_projector(torch.eye(4) * 5.0, 2e-2)


# --------------------------------------------------------------------------------------------
# Orientation: GPT-2 Conv1D and Llama Linear


def _random_model(arch: str, vocab: int):
    ids = dict(bos_token_id=2, eos_token_id=2, pad_token_id=0)  # the world tokenizer's
    if arch == "gpt2":  # n_inner != n_embd so a wrong orientation could not even be added
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_inner=48, n_positions=64, **ids)
    else:
        config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **ids)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_edit_changes_the_intended_weight_in_the_intended_orientation(arch, toy_world, toy_records):
    from editdecay.world.toy import build_tokenizer

    tok = build_tokenizer(toy_world)
    model = _random_model(arch, len(tok))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    texts = [doc for doc in toy_world.corpus(epoch_seed=0)][:40]
    C = {layer: s / 1 for layer, s in accumulate_second_moments(model, tok, texts, [1], max_length=48, progress=False).sums.items()}
    C = {layer: c / c.trace() * c.shape[0] for layer, c in C.items()}
    hp = EditHparams(layers=(1,), mom2_weight=1.0, v_num_grad_steps=3, n_context_templates=1, context_template_length=3)
    result = get_editor("memit", hp).edit(model, tok, toy_records[:3], C)
    delta = result.deltas.layers[1].matrix()
    weight = mlp_out_module(model, 1).weight
    stored = delta.T if arch == "gpt2" else delta  # Conv1D stores [in, out]
    assert tuple(delta.shape) == (32, 48)  # [d_model, d_mlp]: out, in
    torch.testing.assert_close(weight.detach() - before[f"{_prefix(arch)}.1.{_out(arch)}.weight"], stored, rtol=1e-4, atol=1e-5)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == [f"{_prefix(arch)}.1.{_out(arch)}.weight"]
    assert delta.abs().max() > 0


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_frozen_prefix_gives_the_reference_z_and_restores_the_blocks(arch, toy_world, toy_records):
    """Computing the blocks up to the z layer once (ours) equals recomputing them every step (the reference)."""
    from editdecay.editing.memit import compute_zs, context_templates
    from editdecay.world.toy import build_tokenizer

    tok = build_tokenizer(toy_world)
    model = _random_model(arch, len(tok))
    blocks = list(model.get_submodule(_prefix(arch)))
    hp = EditHparams(layers=(1,), v_num_grad_steps=4, n_context_templates=2, context_template_length=3)
    templates = context_templates(model, tok, hp.n_context_templates, hp.context_template_length)
    ours, _ = compute_zs(model, tok, toy_records[:6], hp, templates)
    reference, _ = compute_zs(model, tok, toy_records[:6], dataclasses.replace(hp, reuse_prefix=False), templates)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert list(model.get_submodule(_prefix(arch))) == blocks  # the real blocks are back in place


def test_a_request_that_stops_early_leaves_the_batch_and_every_z_is_its_own(toy_model, stats_cfg, toy_records):
    """Requests stop at different steps (a loose stop loss) and leave the batch; each z still equals
    the z of that request optimised alone (the reference's one-request loop), in any chunking."""
    from editdecay.editing.memit import compute_zs, context_templates

    model, tok = toy_model
    hp = dataclasses.replace(resolve_hparams(model, stats_cfg.edit), v_num_grad_steps=12, z_stop_loss=2.5)
    templates = context_templates(model, tok, hp.n_context_templates, hp.context_template_length)
    batch = toy_records[:8]
    together, info = compute_zs(model, tok, batch, hp, templates)
    alone = [compute_zs(model, tok, [r], dataclasses.replace(hp, reuse_prefix=False), templates) for r in batch]
    steps = [a[1]["z.steps"] for a in alone]
    assert len(set(steps)) > 1 and 0 < min(steps) < hp.v_num_grad_steps - 1  # some stopped, at different steps
    assert info["z.steps"] == pytest.approx(sum(steps) / len(steps)) and info["z.converged"] > 0
    torch.testing.assert_close(together, torch.cat([a[0] for a in alone]), rtol=1e-4, atol=1e-5)
    tight, tight_info = compute_zs(model, tok, batch, dataclasses.replace(hp, z_max_tokens=150), templates)
    assert tight_info["z.chunks"] > 1
    torch.testing.assert_close(tight, together, rtol=1e-4, atol=1e-5)


def test_the_z_stage_gives_the_editors_own_z_and_refuses_other_records(toy_model, stats_cfg, toy_records, tmp_path):
    from editdecay.editing.targets import Targets, compute_targets

    model, tok = toy_model
    hp = fast_hp(model, stats_cfg)
    C = moments(model, tok, stats_cfg, hp.layers)
    records = toy_records[:5]
    own = get_editor("memit", hp).edit(model, tok, records, C)
    own.revert(model)
    compute_targets(model, tok, records, hp).save(tmp_path)
    targets = Targets.load(tmp_path)  # as the pipeline reads it from the z stage
    staged = run_edits(get_editor("memit", hp), model, tok, records, C, targets=targets)
    staged.revert(model)
    for layer in hp.layers:
        torch.testing.assert_close(staged.deltas.layers[layer].matrix(), own.deltas.layers[layer].matrix())
    with pytest.raises(EditError, match="computed for 5 other records"):
        run_edits(get_editor("memit", hp), model, tok, toy_records[1:6], C, targets=targets)
    with pytest.raises(EditError, match="other z hyperparameters"):
        run_edits(get_editor("alphaedit", dataclasses.replace(hp, v_lr=0.1)), model, tok, records, C, targets=targets)
    with pytest.raises(EditError, match="need one batch"):
        run_edits(get_editor("memit", hp), model, tok, records, C, chunk_size=2, targets=targets)


def _prefix(arch: str) -> str:
    return "transformer.h" if arch == "gpt2" else "model.layers"


def _out(arch: str) -> str:
    return "mlp.c_proj" if arch == "gpt2" else "mlp.down_proj"


# --------------------------------------------------------------------------------------------
# On the toy model


def test_alphaedit_update_lies_in_range_of_P(toy_model, stats_cfg, toy_records):
    model, tok = toy_model
    hp = fast_hp(model, stats_cfg)
    C = moments(model, tok, stats_cfg, hp.layers)
    session = get_editor("alphaedit", hp).session(model, tok, C)
    result = session.edit(toy_records[:10])
    for layer in hp.layers:
        P = session.P[layer]
        eigvals, eigvecs = torch.linalg.eigh(P)
        preserved = eigvecs[:, eigvals < 0.5]  # P k = 0: the keys AlphaEdit must not disturb
        assert preserved.shape[1] > 0
        delta = result.deltas.layers[layer].matrix().double()
        ratio = (delta @ preserved).norm() / (delta.norm() * preserved.norm())
        assert ratio < 1e-4, f"layer {layer}: ‖ΔW·k‖ / ‖ΔW‖‖k‖ = {ratio:.2e}"


def test_sequential_alphaedit_session_accumulates_and_a_new_one_starts_from_zero(toy_model, stats_cfg, toy_records):
    model, tok = toy_model
    hp = fast_hp(model, stats_cfg)
    C = moments(model, tok, stats_cfg, hp.layers)
    editor = get_editor("alphaedit", hp)
    session = editor.session(model, tok, C)
    layer = hp.layers[0]
    seen = []
    for b in range(3):
        batch = toy_records[b * 4 : b * 4 + 4]
        before = session.prev_kk[layer].clone()
        session.edit(batch)
        added = session.prev_kk[layer] - before
        assert torch.linalg.matrix_rank(added, rtol=1e-6) == 4  # one key per edit
        seen.append(added)
    torch.testing.assert_close(session.prev_kk[layer], sum(seen))
    fresh = editor.session(model, tok, C)
    assert all(float(kk.abs().max()) == 0.0 for kk in fresh.prev_kk.values())


@pytest.mark.parametrize("chunk_size", [3, None])
def test_revert_restores_weights_bit_for_bit_and_deltas_roundtrip(toy_model, stats_cfg, toy_records, tmp_path, chunk_size):
    model, tok = toy_model
    original = {k: v.clone() for k, v in model.state_dict().items()}
    hp = fast_hp(model, stats_cfg)
    C = moments(model, tok, stats_cfg, hp.layers)
    result = run_edits(get_editor("memit", hp), model, tok, toy_records[:6], C, chunk_size=chunk_size)
    assert result.n_edits == 6 and set(result.timings) >= {"z", "update", "total"}
    assert any(not torch.equal(v, original[k]) for k, v in model.state_dict().items())
    edited = {k: v.clone() for k, v in model.state_dict().items()}
    result.revert(model)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
    # Low-rank factors of rank 6 (two chunks of 3 or one batch); saved and loaded, they rebuild the
    # model the editor made in memory bit for bit (max abs diff 0): the trial keeps only the deltas.
    d = result.deltas.layers[hp.layers[0]]
    assert d.u is not None and d.u.shape[1] == 6
    path = result.deltas.save(tmp_path / "deltas.safetensors")
    loaded = EditDeltas.load(path)
    snapshot = loaded.apply(model)
    assert all(torch.equal(v, edited[k]) for k, v in model.state_dict().items())
    EditDeltas.revert(model, snapshot)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_default_edit_layers_and_overrides(toy_model, stats_cfg):
    model, _ = toy_model
    assert default_edit_layers(model) == [1, 2]
    cfg = load_config(None, ["edit.layers=[-1]", "edit.mom2_weight=7"])
    hp = resolve_hparams(model, cfg.edit)
    assert hp.layers == (3,) and hp.mom2_weight == 7
    with pytest.raises(ConfigError, match="out of range; this model has layers 0..3"):
        resolve_hparams(model, load_config(None, ["edit.layers=[1,9]"]).edit)


def test_low_rank_delta_stays_factored_only_when_smaller():
    small = LayerDelta.low_rank(torch.ones(8, 2), torch.ones(16, 2))
    assert small.u is not None
    big = LayerDelta.low_rank(torch.ones(8, 8), torch.ones(16, 8))
    assert big.dense is not None and torch.equal(big.matrix(), torch.full((8, 16), 8.0))


# --------------------------------------------------------------------------------------------
# Bad input: one line, nothing written


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, EditDecayError)
    return msg


def test_bad_records_are_one_line_errors_and_leave_the_model_unchanged(toy_model, stats_cfg, toy_records):
    model, tok = toy_model
    hp = fast_hp(model, stats_cfg)
    C = moments(model, tok, stats_cfg, hp.layers)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    editor = get_editor("memit", hp)

    empty_target = dataclasses.replace(toy_records[1])
    object.__setattr__(empty_target, "target_new", "   ")  # bypass validation: as from a buggy loader
    with pytest.raises(EditDecayError) as err:
        editor.edit(model, tok, [toy_records[0], empty_target], C)
    assert "tokenises to nothing" in _one_line(err)

    no_subject = dataclasses.replace(toy_records[1])
    object.__setattr__(no_subject, "prompt", "The capital of France is")
    with pytest.raises(EditError) as err:
        editor.edit(model, tok, [toy_records[0], no_subject], C)
    assert "not found in prompt" in _one_line(err)

    bad_c = {layer: c.clone() for layer, c in C.items()}
    bad_c[hp.layers[-1]][0, 0] = float("nan")  # the last layer's solve fails after the first was applied
    with pytest.raises(EditError) as err:
        editor.edit(model, tok, toy_records[:3], bad_c)
    assert "non-finite" in _one_line(err)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_non_finite_z_is_an_error_before_any_weight_changes(toy_model, stats_cfg, toy_records):
    model, tok = toy_model
    hp = fast_hp(model, stats_cfg, v_lr=float("inf"))
    C = moments(model, tok, stats_cfg, hp.layers)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(EditError) as err:
        get_editor("memit", hp).edit(model, tok, toy_records[:2], C)
    assert "target vectors z" in _one_line(err)
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())
