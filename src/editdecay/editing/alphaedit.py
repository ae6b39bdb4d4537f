"""AlphaEdit (Fang et al. 2025, "Null-Space Constrained Knowledge Editing").

Same keys, target vectors and layer spreading as MEMIT (:mod:`editdecay.editing.memit`); the
update differs. P projects onto the null space of the preserved knowledge's second moment C
(eigenvectors whose eigenvalue is below ``nullspace_threshold``: an absolute threshold as the
reference, or ``nullspace_mode: relative``, the smallest directions holding at most that fraction
of C's energy), and

    Δᵀ = solve(P(KKᵀ + K_pK_pᵀ) + αI, P K Rᵀ)

where K_pK_pᵀ sums the keys of the batches already edited *in this session*. The solution lies
in range(P) (it equals P(...)/α), so Δ·k = 0 for every key k with P k = 0: the preserved keys.
"""

from __future__ import annotations

import torch

from editdecay.editing.common import EditError
from editdecay.editing.hparams import EditHparams
from editdecay.editing.memit import MemitEditor, MemitSession


def nullspace_projector(C: torch.Tensor, threshold: float, mode: str = "absolute") -> torch.Tensor:
    """P = U₀U₀ᵀ over C's eigenvectors U₀ with small eigenvalue (float64)."""
    eigvals, eigvecs = torch.linalg.eigh(C.double())  # ascending
    if mode == "absolute":
        null = eigvals < threshold
    elif mode == "relative":
        energy = eigvals.clamp_min(0).cumsum(0) / eigvals.clamp_min(0).sum().clamp_min(1e-300)
        null = energy <= threshold
    else:
        raise EditError(f"edit.nullspace_mode: {mode!r} is not 'absolute' or 'relative'")
    if not null.any():
        raise EditError(f"AlphaEdit null-space projector would be zero: no eigenvalue of C is below the "
                        f"{mode} threshold {threshold:g} (smallest {float(eigvals[0]):.3g}); raise "
                        "edit.nullspace_threshold or use edit.nullspace_mode=relative")
    U0 = eigvecs[:, null]
    return U0 @ U0.T


class AlphaEditSession(MemitSession):
    method = "alphaedit"

    def __init__(self, model, tokenizer, hp: EditHparams, second_moments: dict[int, torch.Tensor]):
        super().__init__(model, tokenizer, hp, second_moments)
        self.P = {layer: nullspace_projector(self.C[layer], hp.nullspace_threshold, hp.nullspace_mode)
                  for layer in self.layers}
        # K_pK_pᵀ of the batches edited so far in this session (starts at zero in every session).
        self.prev_kk = {layer: torch.zeros_like(P) for layer, P in self.P.items()}

    def solve(self, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        P = self.P[layer].to(K.device)
        A = P @ (K @ K.T + self.prev_kk[layer].to(K.device)) + self.hp.alpha * torch.eye(len(P), dtype=P.dtype, device=K.device)
        # Δᵀ = A⁻¹ P K Rᵀ, so Δ = R (A⁻¹ P K)ᵀ: V = A⁻¹ P K keeps Δ as low-rank factors.
        return torch.linalg.solve(A, P @ K)

    def after_batch(self, keys: dict[int, torch.Tensor]) -> None:
        # Keys at layer l depend only on layers < l, which were already edited when they were read,
        # so they are the edited model's keys: the reference recomputes the same values.
        for layer, K in keys.items():
            self.prev_kk[layer] += (K @ K.T).to(self.prev_kk[layer].device)


class AlphaEditEditor(MemitEditor):
    name = "alphaedit"
    session_class = AlphaEditSession
