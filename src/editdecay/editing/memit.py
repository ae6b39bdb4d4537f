"""MEMIT (Meng et al. 2022, "Mass-Editing Memory in a Transformer"), faithful to the public code.

For a batch of requests (subject s, prompt p, new target o*):

1. **Context templates** (:func:`context_templates`): ``"{}"`` plus ``n_context_templates``
   short texts the model itself generates from the prefixes "The", "Therefore", "Because", "I",
   "You" (top-5 sampling, ``context_template_length`` tokens), each followed by ``". {}"``. The
   reference samples them from the global RNG, so two runs differ; we sample from a
   ``torch.Generator`` seeded with ``template_seed``: the same model gives the same templates.
2. **Target vectors z** (:func:`compute_zs`): at the last edited layer L, the block output at the
   subject's last token is shifted by δ, optimised with Adam to maximise P(o* | template + p) over
   every template, plus ``kl_factor`` · KL(P(· | "{s} is a") ‖ its value at δ=0) and
   ``v_weight_decay`` · ‖δ‖ / ‖z₀‖², with ‖δ‖ clamped to ``clamp_norm_factor`` · ‖z₀‖ after each
   step and a request stopping early once its loss is below ``z_stop_loss`` (the reference's
   0.05). The reference optimises one request at a time; here every request has its own row of
   δ and a chunk of them shares one forward/backward (attention never mixes sequences, and Adam
   is elementwise, so each row follows the same trajectory it would alone); a request that
   stopped leaves the batch, and the blocks up to the z layer run once, not every step.
3. **Spread over layers** (:meth:`MemitSession.edit`): for each edited layer l in order, keys K
   (MLP-output-projection inputs at the subject's last token: half the plain prompt, half the mean
   over the generated templates, as the reference averages per template group) and the residual
   R = (z − current output of layer L) / (layers left) are recomputed with the layers edited so
   far, and Δ_l = R Kᵀ(λC + KKᵀ)⁻¹ is solved in float64 and added to W_out of layer l.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Sequence

import torch

from editdecay.arch import arch_for, check_layers, get_module, mlp_out_dims, mlp_out_module
from editdecay.data.records import EditRecord
from editdecay.editing.common import (
    EditError,
    Encoded,
    check_finite,
    encode,
    fill,
    frozen_prefix,
    hidden_of,
    hooks,
    model_device,
    pad,
    pad_id,
    replace_hidden,
)
from editdecay.editing.deltas import EditDeltas, LayerDelta, WeightSnapshot
from editdecay.editing.hparams import EditHparams
from editdecay.editing.registry import EditResult
from editdecay.editing.targets import Targets

TEMPLATE_PREFIXES = ("The", "Therefore", "Because", "I", "You")
KL_PROMPT = "{} is a"
FORWARD_ROWS = 256  # sequences per no-grad forward when reading keys and outputs


# --------------------------------------------------------------------------------------------
# Context templates


def context_templates(model: torch.nn.Module, tokenizer, n: int, length: int, seed: int = 0) -> list[str]:
    """``["{}", "<generated text>. {}", ...]``: deterministic for a given model, tokenizer and seed."""
    templates = ["{}"]
    if n == 0:
        return templates
    unk = tokenizer.unk_token_id
    # A prefix the tokenizer does not know (the toy world's closed vocabulary) would start from UNK.
    prefixes = [p for p in TEMPLATE_PREFIXES if unk is None or unk not in tokenizer(p, add_special_tokens=False)["input_ids"]]
    prefixes = prefixes or [""]
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    with torch.no_grad():
        for i in range(n):
            ids = tokenizer(prefixes[i % len(prefixes)], add_special_tokens=True)["input_ids"]
            if not ids:
                ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
            start = len(ids)
            for _ in range(length):
                logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float().cpu()
                logits[banned[banned < logits.numel()]] = -float("inf")
                top = torch.topk(logits, k=min(5, logits.numel()))
                pick = torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)
                ids.append(int(top.indices[pick]))
            text = tokenizer.decode(ids, skip_special_tokens=True)
            if start == 1 and ids[0] in tokenizer.all_special_ids:
                text = text.strip()
            templates.append(text.replace("{", " ").replace("}", " ") + ". {}")
    return templates


# --------------------------------------------------------------------------------------------
# Reading the model at the subject's last token


class _StopForward(Exception):
    """Raised by a reading hook: the rest of the forward pass is not needed."""


def _run_rows(model: torch.nn.Module, tokenizer, seqs: list[Encoded], module: torch.nn.Module,
              what: str) -> torch.Tensor:
    """``module``'s input (``what='input'``) or output at each sequence's subject-last token."""
    device = model_device(model)
    out: list[torch.Tensor] = []
    for start in range(0, len(seqs), FORWARD_ROWS):
        chunk = seqs[start : start + FORWARD_ROWS]
        ids, mask = pad([s.ids for s in chunk], pad_id(tokenizer), device)
        rows = torch.arange(len(chunk), device=device)
        cols = torch.tensor([s.lookup for s in chunk], device=device)
        got: dict[str, torch.Tensor] = {}

        # Stop the forward pass once the value is read: the later blocks and the LM head (49k
        # logits per token on Llama-type models) are not needed.
        def read_input(_m, args):
            got["x"] = args[0][rows, cols]
            raise _StopForward

        def read_output(_m, _a, o):
            got["x"] = hidden_of(o)[rows, cols]
            raise _StopForward

        handle = (module.register_forward_pre_hook(read_input) if what == "input"
                  else module.register_forward_hook(read_output))
        with hooks([handle]), torch.no_grad():
            try:
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            except _StopForward:
                pass
        out.append(got["x"].float())
    return torch.cat(out)


def compute_keys(model, tokenizer, records: Sequence[EditRecord], layer: int, templates: list[str],
                 fact_token: str = "subject_last") -> torch.Tensor:
    """K: [n, d_in], the MLP-output-projection input at the subject's last token (see module doc)."""
    seqs = []
    for r in records:
        for c in templates:
            text, span = fill(r.prompt, r.subject, context=c)
            seqs.append(encode(tokenizer, text, span, fact_token=fact_token))
    keys = _run_rows(model, tokenizer, seqs, mlp_out_module(model, layer), "input")
    keys = keys.view(len(records), len(templates), -1)
    if len(templates) == 1:
        return keys[:, 0]
    # The reference averages within each template group ("{}" alone; the generated ones), then over groups.
    return 0.5 * (keys[:, 0] + keys[:, 1:].mean(1))


def layer_outputs(model, tokenizer, records: Sequence[EditRecord], layer: int, fact_token: str = "subject_last") -> torch.Tensor:
    """[n, d_model]: block ``layer``'s output at the subject's last token of the plain prompt."""
    seqs = [encode(tokenizer, *fill(r.prompt, r.subject), fact_token=fact_token) for r in records]
    return _run_rows(model, tokenizer, seqs, get_module(model, arch_for(model).block_path(layer)), "output")


# --------------------------------------------------------------------------------------------
# Target vectors z, batched over requests


@dataclass
class _ZRequest:
    """One request's sequences: the prompt under every template (reading prompt + target[:-1]),
    then the KL prompt; the target tokens to predict as (sequence, position, token, weight)."""

    seqs: list[list[int]]
    lookup: list[int]
    targets: list[tuple[int, int, int, float]]

    @property
    def width(self) -> int:
        return max(len(s) for s in self.seqs)


def _z_request(tokenizer, r: EditRecord, templates: list[str], fact_token: str) -> _ZRequest:
    seqs, lookup, targets = [], [], []
    for t, c in enumerate(templates):
        text, span = fill(r.prompt, r.subject, context=c)
        enc = encode(tokenizer, text, span, target=r.target_new, fact_token=fact_token)
        inp = enc.ids[:-1]  # the model reads prompt + target[:-1] and predicts each target token
        first = len(inp) - enc.n_target
        # weight 1 / (n_target · n_templates): mean NLL per prompt, mean over prompts
        targets += [(t, first + k, enc.ids[first + k + 1], 1.0 / (enc.n_target * len(templates)))
                    for k in range(enc.n_target)]
        seqs.append(inp)
        lookup.append(enc.lookup)
    text, span = fill(KL_PROMPT, r.subject)
    enc = encode(tokenizer, text, span, fact_token=fact_token)
    seqs.append(enc.ids)
    lookup.append(enc.lookup)
    return _ZRequest(seqs, lookup, targets)


@dataclass
class _ZBatch:
    ids: torch.Tensor  # [N, T]
    mask: torch.Tensor
    lookup: torch.Tensor  # [N] subject-last position of every sequence
    owner: torch.Tensor  # [N] request index (within the batch) of every sequence
    init_rows: torch.Tensor  # [n_req] the row of each request's plain "{}" prompt
    tgt_rows: torch.Tensor  # [M] (row, position, token) of every target token to predict
    tgt_pos: torch.Tensor
    tgt_tok: torch.Tensor
    tgt_weight: torch.Tensor  # [M]
    kl_rows: torch.Tensor  # [n_req] the row of each request's KL prompt


def _z_batch(requests: list[_ZRequest], pad_token: int, device) -> _ZBatch:
    seqs: list[list[int]] = []
    lookup, owner, init_rows, kl_rows = [], [], [], []
    tgt: list[tuple[int, int, int, float]] = []
    for j, q in enumerate(requests):
        base = len(seqs)
        init_rows.append(base)  # templates[0] is "{}"
        kl_rows.append(base + len(q.seqs) - 1)
        tgt += [(base + t, pos, tok, w) for t, pos, tok, w in q.targets]
        seqs += q.seqs
        lookup += q.lookup
        owner += [j] * len(q.seqs)
    ids, mask = pad(seqs, pad_token, device)
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    rows, pos, tok, weight = zip(*tgt)
    return _ZBatch(ids, mask, t(lookup), t(owner), t(init_rows), t(rows), t(pos), t(tok), t(weight, torch.float32),
                   t(kl_rows))


def z_chunks(requests: list[_ZRequest], max_requests: int | None, max_tokens: int | None) -> list[list[int]]:
    """Request indices per z forward/backward: at most ``max_requests`` requests and (``max_tokens``)
    sequences × padded width. Requests are grouped by length (less padding), each chunk optimised
    on its own: every request's δ depends only on its own sequences, so the grouping changes no
    result beyond rounding. The activations autograd keeps for one step grow with sequences ×
    width × the layers above the z layer (SmolLM2-135M: about 0.5 MB per token, so 20 requests
    of 7 sequences in one batch held 3 GB); the token budget bounds them."""
    order = sorted(range(len(requests)), key=lambda i: requests[i].width)
    chunks: list[list[int]] = []
    rows = width = 0
    for i in order:
        q = requests[i]
        w = max(width, q.width)
        full = chunks and (
            (max_requests is not None and len(chunks[-1]) >= max_requests)
            or (max_tokens is not None and (rows + len(q.seqs)) * w > max_tokens))
        if not chunks or full:
            chunks.append([])
            rows = width = 0
            w = q.width
        chunks[-1].append(i)
        rows += len(q.seqs)
        width = w
    return chunks


def compute_zs(model, tokenizer, records: Sequence[EditRecord], hp: EditHparams, templates: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
    """z: [n, d_model] for every request, optimised in chunks (:func:`z_chunks`); the dict holds the
    mean ‖δ‖, the mean final loss, the mean number of optimizer steps a request took and the
    fraction that reached the early-stop loss."""
    requests = [_z_request(tokenizer, r, templates, hp.fact_token) for r in records]
    chunks = z_chunks(requests, hp.z_batch_size, hp.z_max_tokens)
    n = len(records)
    z = torch.empty(0)
    norms, losses, steps = torch.empty(n), torch.empty(n), torch.empty(n)
    requires = {name: p.requires_grad for name, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    for p in model.parameters():  # gradients flow to δ only
        p.requires_grad_(False)
    try:
        for chunk in chunks:
            zc, norm_c, loss_c, steps_c = _optimise_z(model, tokenizer, [requests[i] for i in chunk], hp)
            if z.numel() == 0:
                z = torch.empty(n, zc.shape[1], dtype=zc.dtype, device=zc.device)
            idx = torch.tensor(chunk)
            z[idx.to(z.device)] = zc
            norms[idx], losses[idx], steps[idx] = norm_c.cpu(), loss_c.cpu(), steps_c.cpu().float()
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(requires[name])
        model.train(was_training)
    check_finite(z, "target vectors z")
    return z, {"z.delta_norm": float(norms.mean()), "z.final_loss": float(losses.mean()),
               "z.steps": float(steps.mean()), "z.converged": float((losses < hp.z_stop_loss).float().mean()),
               "z.chunks": float(len(chunks))}


def _optimise_z(model, tokenizer, requests: list[_ZRequest], hp: EditHparams):
    """(z, ‖δ‖, final loss, optimizer steps) per request of one chunk."""
    spec = arch_for(model)
    device = model_device(model)
    b = _z_batch(requests, pad_id(tokenizer), device)
    n = len(requests)
    z_layer = max(hp.layers)
    body = model.base_model  # the transformer without the LM head (final norm included)
    head = get_module(model, spec.lm_head)
    d_model = mlp_out_dims(model, z_layer)[1]
    delta = torch.zeros(n, d_model, device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    view = {"rows": torch.arange(len(b.owner), device=device), "width": b.ids.shape[1]}
    state: dict[str, torch.Tensor] = {}

    def add_delta(_module, _args, output):
        h = hidden_of(output)
        rows = view["rows"]
        if "z_init" not in state:  # the first forward has every request in the batch
            state["z_init"] = h[b.init_rows, b.lookup[b.init_rows]].detach().float()
        at = (torch.arange(len(rows), device=device), b.lookup[rows])
        h = h.index_put(at, delta[b.owner[rows]].to(h.dtype), accumulate=True)
        return replace_hidden(output, h)

    def forward() -> torch.Tensor:
        rows, width = view["rows"], view["width"]
        return body(input_ids=b.ids[rows, :width], attention_mask=b.mask[rows, :width],
                    use_cache=False).last_hidden_state

    prefix = [spec.block_path(i) for i in range(z_layer + 1)]  # their outputs do not depend on δ
    with frozen_prefix(model, prefix, forward) if hp.reuse_prefix else nullcontext() as select:
        block = get_module(model, spec.block_path(z_layer))  # (its replay, when the prefix is frozen)
        with hooks([block.register_forward_hook(add_delta)]):
            loss, steps = _z_steps(forward, b, head, delta, opt, state, view, select, hp, n, device)
    delta = delta.detach()
    return state["z_init"] + delta, delta.norm(dim=1), loss, steps


def _z_steps(forward, b: _ZBatch, head, delta, opt, state, view, select, hp: EditHparams, n: int, device):
    """The optimisation of δ: NLL of the targets + KL on the "{subject} is a" prompts + weight decay.

    A request whose loss falls below ``hp.z_stop_loss`` stops there, as the reference's per-request
    loop (MEMIT: 5e-2), and its sequences leave the batch: later steps compute only the requests
    still optimising. Returns (final loss, optimizer steps taken) per request."""
    active = torch.ones(n, dtype=torch.bool, device=device)
    final = torch.zeros(n, device=device)
    steps = torch.zeros(n, dtype=torch.long, device=device)
    for it in range(hp.v_num_grad_steps):
        opt.zero_grad(set_to_none=True)
        req = active.nonzero().squeeze(1)  # requests in this step's batch
        if it > 0:  # step 0 already has every row (the first forward records z_init and the prefix)
            rows = active[b.owner].nonzero().squeeze(1)
            view["rows"], view["width"] = rows, int(b.mask[rows].sum(1).max())
            if select is not None:
                select(rows, view["width"])
        at = torch.full((len(b.owner),), -1, dtype=torch.long, device=device)
        at[view["rows"]] = torch.arange(len(view["rows"]), device=device)  # batch row -> row in this step
        hidden = forward()
        # LM head only where a loss is read: target positions and the KL prompts' subject token.
        keep = active[b.owner[b.tgt_rows]]
        tgt_rows = b.tgt_rows[keep]
        tgt_logp = torch.log_softmax(head(hidden[at[tgt_rows], b.tgt_pos[keep]]).float(), -1)
        nll_tok = -tgt_logp.gather(1, b.tgt_tok[keep][:, None]).squeeze(1) * b.tgt_weight[keep]
        nll = torch.zeros(n, device=device).index_add(0, b.owner[tgt_rows], nll_tok)
        kl_rows = b.kl_rows[req]
        kl_logp = torch.log_softmax(head(hidden[at[kl_rows], b.lookup[kl_rows]]).float(), -1)
        if "kl_init" not in state:
            state["kl_init"] = kl_logp.detach()
        kl_req = (kl_logp.exp() * (kl_logp - state["kl_init"][req])).sum(-1)  # KL(now ‖ start), as the reference
        kl = torch.zeros(n, device=device).index_add(0, req, kl_req)
        z_init = state["z_init"]
        wd = hp.v_weight_decay * delta.norm(dim=1) / z_init.norm(dim=1) ** 2
        loss_req = nll + hp.kl_factor * kl + wd
        final[req] = loss_req.detach()[req]
        active &= final >= hp.z_stop_loss  # a request that reached the goal stops here
        if it == hp.v_num_grad_steps - 1 or not active.any():
            break
        (loss_req * active).sum().backward()
        del hidden, tgt_logp, kl_logp, loss_req, nll, kl, nll_tok, kl_req  # this step's graph is gone
        before = delta.detach().clone()
        opt.step()
        steps += active
        with torch.no_grad():
            delta[~active] = before[~active]
            max_norm = hp.clamp_norm_factor * z_init.norm(dim=1)
            norm = delta.norm(dim=1)
            delta.mul_(torch.where(norm > max_norm, max_norm / norm.clamp_min(1e-12), torch.ones_like(norm))[:, None])
    return final, steps


# --------------------------------------------------------------------------------------------
# The editor


class MemitSession:
    """Edits one model; MEMIT keeps nothing between batches except the context templates."""

    method = "memit"

    def __init__(self, model: torch.nn.Module, tokenizer, hp: EditHparams, second_moments: dict[int, torch.Tensor]):
        self.model = model
        self.tokenizer = tokenizer
        self.hp = hp
        self.layers = check_layers(list(hp.layers), model)
        missing = [layer for layer in self.layers if layer not in second_moments]
        if missing:
            raise EditError(f"layer statistics missing for edited layer(s) {missing}; run editdecay stats")
        for layer in self.layers:
            d_in = mlp_out_dims(model, layer)[0]
            if tuple(second_moments[layer].shape) != (d_in, d_in):
                raise EditError(f"layer {layer} statistics have shape {tuple(second_moments[layer].shape)}, "
                                f"expected ({d_in}, {d_in}): they belong to another model")
        self.C = {layer: second_moments[layer] for layer in self.layers}
        self.templates = context_templates(model, tokenizer, hp.n_context_templates, hp.context_template_length,
                                           hp.template_seed)

    # The method-specific part: V with Δ = R Vᵀ (float64). MEMIT: V = (λC + KKᵀ)⁻¹ K.
    def solve(self, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        C = self.C[layer].to(K.device, torch.float64)
        return torch.linalg.solve(self.hp.mom2_weight * C + K @ K.T, K)

    def after_batch(self, keys: dict[int, torch.Tensor]) -> None:
        """Hook for session state that carries to the next batch (AlphaEdit)."""

    def edit(self, records: Sequence[EditRecord],
             targets: Targets | tuple[torch.Tensor, dict[str, float]] | None = None) -> EditResult:
        """``targets``: z for these records when already computed — the z stage's :class:`Targets`
        (checked against the records and the z hyperparameters) or ``compute_zs``' result; z does
        not depend on λ or the editor (:mod:`editdecay.editing.targets`)."""
        records = list(records)
        if not records:
            raise EditError("no edit records to apply")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if isinstance(targets, Targets):
            targets.check(records, self.hp)
            targets = targets.pair
        zs, z_norms = targets or compute_zs(self.model, self.tokenizer, records, self.hp, self.templates)
        timings["z"] = time.perf_counter() - t0
        z_layer = max(self.layers)
        snapshot = WeightSnapshot.take(self.model, self.layers)
        deltas: dict[int, LayerDelta] = {}
        keys: dict[int, torch.Tensor] = {}
        t1 = time.perf_counter()
        try:
            for i, layer in enumerate(self.layers):
                K = compute_keys(self.model, self.tokenizer, records, layer, self.templates, self.hp.fact_token).T.double()  # [d_in, n]
                current = layer_outputs(self.model, self.tokenizer, records, z_layer, self.hp.fact_token)
                R = (zs - current).T.double() / (len(self.layers) - i)  # [d_out, n]
                V = self.solve(layer, K, R)
                check_finite(V, f"the layer {layer} update solve")
                delta = LayerDelta.low_rank(R.float().cpu(), V.float().cpu())
                EditDeltas({layer: delta}).apply(self.model)
                deltas[layer] = delta
                keys[layer] = K
            self.after_batch(keys)
        except BaseException:
            snapshot.restore(self.model)
            raise
        timings["update"] = time.perf_counter() - t1
        result = EditDeltas(deltas, {"method": self.method, "layers": ",".join(map(str, self.layers))})
        norms = {**z_norms, **{f"delta.layer{layer}": d.norm() for layer, d in deltas.items()}}
        return EditResult(self.method, len(records), result, snapshot, timings, norms)


class MemitEditor:
    name = "memit"
    session_class = MemitSession

    def __init__(self, hparams: EditHparams):
        self.hparams = hparams

    def session(self, model, tokenizer, second_moments: dict[int, torch.Tensor]) -> MemitSession:
        return self.session_class(model, tokenizer, self.hparams, second_moments)

    def edit(self, model, tokenizer, records: Sequence[EditRecord], second_moments: dict[int, torch.Tensor]) -> EditResult:
        return self.session(model, tokenizer, second_moments).edit(records)
