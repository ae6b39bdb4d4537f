"""User-facing errors.

Anything raised as an ``EditDecayError`` is a problem with the user's input or environment. The
CLI prints its message as one line and exits non-zero, without a traceback; everything else is a
bug and keeps its traceback.
"""


class EditDecayError(Exception):
    """A user-facing error: the message names the field and the fix, on one line."""

    exit_code = 2


class ConfigError(EditDecayError):
    """A config key, type or value is wrong."""


class DataError(EditDecayError):
    """An input file or record is missing or malformed."""


class ModelLoadError(EditDecayError):
    """A model or tokenizer cannot be loaded (no network, missing directory, unsupported type)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, Slurm, Kubernetes, ``ray job stop``), raised like Ctrl-C so every run
    ends KILLED the same way; the CLI exits 143 (128 + SIGTERM)."""
