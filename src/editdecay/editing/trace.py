"""Causal tracing (ROME, Meng et al. 2022, §2.1; MEMIT §3): where does a model recall a fact?

For each record: run the prompt clean and note the model's own next token and its probability;
corrupt the subject by adding Gaussian noise (3 × the embeddings' standard deviation, as ROME) to
its token embeddings; then, for each layer l, rerun the corrupted prompt while restoring the clean
MLP output at the subject's last token in the window of ``window`` layers centred on l. The
indirect effect IE(l) = p_restored(token) − p_corrupted(token), averaged over ``n_noise`` noise
draws and over the records. MEMIT edits the layers where this MLP effect peaks early (GPT-J 3-8,
Llama 4-8); :func:`propose_layers` returns the contiguous ``n_layers`` window with the largest
summed effect, a proposal to check by editing, not a guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from editdecay.arch import arch_for, get_module, mlp_out_module, num_layers
from editdecay.data.records import EditRecord
from editdecay.editing.common import encode, fill, hidden_of, hooks, model_device, replace_hidden

NOISE_SCALE = 3.0  # ROME: noise std = 3 × the std of the subject embeddings over a corpus


@dataclass(frozen=True)
class TraceResult:
    layers: list[int]
    indirect_effect: list[float]  # mean over records, per layer
    per_record: list[list[float]]  # records × layers
    clean_prob: float  # mean p(token) on the clean prompt
    corrupted_prob: float  # mean p(token) with the subject corrupted
    window: int


@torch.no_grad()
def trace_mlp(model: torch.nn.Module, tokenizer, records: Sequence[EditRecord], *, window: int = 5,
              n_noise: int = 10, seed: int = 0) -> TraceResult:
    device = model_device(model)
    n = num_layers(model)
    embed = get_module(model, arch_for(model).embed)
    noise_std = NOISE_SCALE * embed.weight.float().std().item()
    gen = torch.Generator().manual_seed(seed)
    per_record, clean_ps, corrupt_ps = [], [], []
    for record in records:
        text, span = fill(record.prompt, record.subject)
        enc = encode(tokenizer, text, span)
        ids = torch.tensor([enc.ids], device=device)
        first = _subject_first(tokenizer, text, span)
        clean_logits = model(ids).logits[0, -1].float()
        token = int(clean_logits.argmax())
        clean_mlp = _mlp_outputs(model, ids, enc.lookup, n)
        noise = torch.randn((n_noise, enc.lookup - first + 1, embed.weight.shape[1]), generator=gen) * noise_std
        batch = ids.repeat(n_noise, 1)
        corrupt = _corrupt_hook(embed, first, enc.lookup, noise.to(device, embed.weight.dtype))
        with hooks([embed.register_forward_hook(corrupt)]):
            base = model(batch).logits[:, -1].float().softmax(-1)[:, token].mean().item()
            effects = []
            for layer in range(n):
                lo, hi = max(0, layer - window // 2), min(n, layer - window // 2 + window)
                handles = [mlp_out_module(model, j).register_forward_hook(_restore_hook(clean_mlp[j], enc.lookup))
                           for j in range(lo, hi)]
                with hooks(handles):
                    p = model(batch).logits[:, -1].float().softmax(-1)[:, token].mean().item()
                effects.append(p - base)
        per_record.append(effects)
        clean_ps.append(clean_logits.softmax(-1)[token].item())
        corrupt_ps.append(base)
    mean = [sum(col) / len(col) for col in zip(*per_record)]
    return TraceResult(layers=list(range(n)), indirect_effect=mean, per_record=per_record,
                       clean_prob=sum(clean_ps) / len(clean_ps), corrupted_prob=sum(corrupt_ps) / len(corrupt_ps),
                       window=window)


def propose_layers(result: TraceResult, n_layers: int = 5) -> list[int]:
    """The contiguous ``n_layers`` window with the largest summed indirect effect."""
    ie = result.indirect_effect
    k = min(n_layers, len(ie))
    best = max(range(len(ie) - k + 1), key=lambda s: (sum(ie[s:s + k]), -s))
    return list(range(best, best + k))


def _subject_first(tokenizer, text: str, span: tuple[int, int]) -> int:
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    start, end = span
    return next(i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < end and b > start)


def _mlp_outputs(model, ids, position: int, n: int) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = [None] * n  # type: ignore[list-item]

    def grab(layer):
        def hook(_module, _inputs, output):
            outs[layer] = hidden_of(output)[0, position].detach().clone()
        return hook

    with hooks([mlp_out_module(model, layer).register_forward_hook(grab(layer)) for layer in range(n)]):
        model(ids)
    return outs


def _corrupt_hook(embed, first: int, last: int, noise: torch.Tensor):
    def hook(_module, _inputs, output):
        output = output.clone()
        output[:, first:last + 1] += noise
        return output
    return hook


def _restore_hook(clean: torch.Tensor, position: int):
    def hook(_module, _inputs, output):
        hidden = hidden_of(output).clone()
        hidden[:, position] = clean
        return replace_hidden(output, hidden)
    return hook
