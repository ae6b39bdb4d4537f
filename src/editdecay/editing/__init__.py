"""The editing engine: layer statistics, MEMIT and AlphaEdit, deltas, and the stage entry points.

- :mod:`~editdecay.editing.stats`     ``second_moments(model, tok, cfg, layers)``: C per layer, cached
- :mod:`~editdecay.editing.hparams`   per-model defaults; ``resolve_hparams``, ``default_edit_layers``
- :mod:`~editdecay.editing.registry`  ``get_editor(name, hparams)``, ``run_edits`` (batch / chunks), ``EditResult``
- :mod:`~editdecay.editing.memit`, :mod:`~editdecay.editing.alphaedit`  the editors
- :mod:`~editdecay.editing.deltas`    ``EditDeltas`` (low-rank, apply / save / load), ``WeightSnapshot`` (revert)
- :mod:`~editdecay.editing.run`       ``run_stats(cfg)``, ``run_edit(cfg, out)``: what ``editdecay stats/edit`` run

Submodules are imported on use (nothing heavy happens at ``import editdecay.editing``).
"""
