"""DeepSpeed told which accelerator to use, so it never has to guess (and say so).

DeepSpeed picks its accelerator when it is first imported — which transformers and accelerate do
whenever a model is loaded or saved, not only for DeepSpeed fine-tuning — and, finding no GPU, logs
"Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it."
on every trial. :func:`name_deepspeed_accelerator` sets its documented override, ``DS_ACCELERATOR``,
to the device policy :mod:`editdecay.models` follows (``cuda`` where torch sees a GPU, else
``cpu``) before that import; a value the user set is left alone. Child processes (torchrun ranks)
inherit it.
"""

from __future__ import annotations

import os


def name_deepspeed_accelerator() -> str:
    """Set ``DS_ACCELERATOR`` unless it is set; returns the value in force."""
    if not os.environ.get("DS_ACCELERATOR"):
        import torch

        os.environ["DS_ACCELERATOR"] = "cuda" if torch.cuda.is_available() else "cpu"
    return os.environ["DS_ACCELERATOR"]
