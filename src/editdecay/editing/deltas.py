"""Weight deltas of an edit: compact, appliable, revertible bit for bit, saved as safetensors.

MEMIT's and AlphaEdit's updates are ``Δ = U Vᵀ`` with rank at most the number of edits, so a
layer's delta is stored as its two factors (``[d_out, r]`` and ``[d_in, r]``) unless the dense
matrix is smaller. Δ is always in the ``[out, in]`` orientation of
:func:`editdecay.arch.mlp_out_weight_view`; the architecture table handles GPT-2's ``Conv1D``.

Reverting subtracts nothing: applying returns a :class:`WeightSnapshot` of the original rows it
touched, and restoring copies them back, so the model is bit-for-bit what it was.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from editdecay.arch import check_layers, mlp_out_weight_view
from editdecay.editing.common import EditError
from editdecay.io import atomic_write_with


@dataclass
class LayerDelta:
    """Δ = u @ v.T (``dense`` is None) or Δ = dense; float32 or float64, on the CPU."""

    u: torch.Tensor | None = None  # [d_out, r]
    v: torch.Tensor | None = None  # [d_in, r]
    dense: torch.Tensor | None = None  # [d_out, d_in]

    @classmethod
    def low_rank(cls, u: torch.Tensor, v: torch.Tensor) -> "LayerDelta":
        d_out, r = u.shape
        d_in = v.shape[0]
        if r * (d_out + d_in) >= d_out * d_in:  # factors would be larger than the matrix
            return cls(dense=(u @ v.T))
        return cls(u=u, v=v)

    def matrix(self) -> torch.Tensor:
        return self.dense if self.dense is not None else self.u @ self.v.T  # type: ignore[operator]

    @property
    def shape(self) -> tuple[int, int]:
        if self.dense is not None:
            return tuple(self.dense.shape)  # type: ignore[return-value]
        return (self.u.shape[0], self.v.shape[0])  # type: ignore[union-attr]

    def __add__(self, other: "LayerDelta") -> "LayerDelta":
        """Sum of two deltas (sequential chunks): factors concatenate, ranks add."""
        if self.dense is None and other.dense is None:
            return LayerDelta.low_rank(torch.cat([self.u, other.u], 1), torch.cat([self.v, other.v], 1))
        return LayerDelta(dense=self.matrix() + other.matrix())

    def norm(self) -> float:
        return float(torch.linalg.matrix_norm(self.matrix().double()))


@dataclass
class WeightSnapshot:
    """Copies of the MLP-output weights (as stored) before deltas were applied."""

    originals: dict[int, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def take(cls, model: torch.nn.Module, layers) -> "WeightSnapshot":
        return cls({layer: mlp_out_weight_view(model, layer).detach().clone() for layer in layers})

    def restore(self, model: torch.nn.Module) -> None:
        with torch.no_grad():
            for layer, original in self.originals.items():
                mlp_out_weight_view(model, layer).copy_(original)


@dataclass
class EditDeltas:
    layers: dict[int, LayerDelta]
    meta: dict[str, str] = field(default_factory=dict)

    def __add__(self, other: "EditDeltas") -> "EditDeltas":
        out = dict(self.layers)
        for layer, d in other.layers.items():
            out[layer] = out[layer] + d if layer in out else d
        return EditDeltas(out, {**self.meta, **other.meta})

    def norms(self) -> dict[int, float]:
        return {layer: d.norm() for layer, d in self.layers.items()}

    def apply(self, model: torch.nn.Module) -> WeightSnapshot:
        """W += Δ for each layer (in float32, then cast to the weight's dtype); returns the originals."""
        check_layers(list(self.layers), model, key="deltas layers")
        for layer, d in self.layers.items():
            w = mlp_out_weight_view(model, layer)
            if tuple(w.shape) != d.shape:
                raise EditError(f"delta for layer {layer} has shape {d.shape} but the weight is {tuple(w.shape)} "
                                "([out, in]); the deltas belong to another model")
        snapshot = WeightSnapshot.take(model, self.layers)
        with torch.no_grad():
            for layer, d in self.layers.items():
                w = mlp_out_weight_view(model, layer)
                w.copy_((w.float() + d.matrix().to(w.device, torch.float32)).to(w.dtype))
        return snapshot

    @staticmethod
    def revert(model: torch.nn.Module, snapshot: WeightSnapshot) -> None:
        """Undo :meth:`apply`: copy back the weights it returned, so the model is bit for bit the base."""
        snapshot.restore(model)

    def save(self, path: str | os.PathLike) -> Path:
        """Atomically write safetensors: ``layer{l}.u``/``.v`` or ``layer{l}.dense``, meta as JSON."""
        path = Path(path)
        tensors: dict[str, torch.Tensor] = {}
        for layer, d in self.layers.items():
            if d.dense is not None:
                tensors[f"layer{layer}.dense"] = d.dense.contiguous().cpu()
            else:
                tensors[f"layer{layer}.u"] = d.u.contiguous().cpu()  # type: ignore[union-attr]
                tensors[f"layer{layer}.v"] = d.v.contiguous().cpu()  # type: ignore[union-attr]
        metadata = {"editdecay.meta": json.dumps(self.meta, sort_keys=True)}
        return atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EditDeltas":
        layers: dict[int, dict[str, torch.Tensor]] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("editdecay.meta", "{}"))
            for name in f.keys():
                head, part = name.split(".")
                layers.setdefault(int(head.removeprefix("layer")), {})[part] = f.get_tensor(name)
        return cls({layer: LayerDelta(**parts) for layer, parts in sorted(layers.items())}, meta)
