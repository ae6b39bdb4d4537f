"""Named offline English corpora for layer statistics (``edit.stats.corpus: <name>``).

The reference computes C = E[k kᵀ] over 100,000 Wikipedia texts, which needs a hub. These are real
English texts that a machine without a hub can still name and pin:

* ``wordnet-glosses``: the definitions and usage examples of WordNet 3.0 (Princeton University,
  WordNet 3.0 licence: use, copy, modify and distribute for any purpose, without fee), read from
  the Debian package ``wordnet-base`` (``apt-get install wordnet-base``; 117,659 synsets, ~15 MB of
  data files). One text per synset: "lemma: definition. example. example."
* ``python-docstrings``: the docstrings of the running Python's standard library, parsed with
  ``ast`` (no module is imported), one paragraph per text (PSF licence). Always present; technical
  English, a fallback where WordNet is not installed.

Each entry returns a corpus id (part of the statistics cache key, so different text never reuses a
cached C) and a deterministic list of texts (the same order on every machine with the same files).
"""

from __future__ import annotations

import ast
import hashlib
import os
import random
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from editdecay.errors import DataError

WORDNET_DIR = Path(os.environ.get("EDITDECAY_WORDNET_DIR", "/usr/share/wordnet"))
_WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


def wordnet_glosses(n: int) -> tuple[str, list[str]]:
    files = [WORDNET_DIR / name for name in _WORDNET_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"edit.stats.corpus: 'wordnet-glosses' needs WordNet's data files ({missing[0]} is missing): "
            "apt-get install wordnet-base (or set EDITDECAY_WORDNET_DIR), or use edit.stats.corpus=python-docstrings"
        )
    digest = hashlib.sha256()
    texts: list[str] = []
    for f in files:
        raw = f.read_bytes()
        digest.update(raw)
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header lines start with spaces
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            lemma = fields[4].replace("_", " ") if len(fields) > 4 else ""
            parts = [p.strip().strip('"').strip() for p in gloss.split(";")]
            parts = [p for p in parts if p]
            if lemma and parts:
                texts.append(f"{lemma}: " + ". ".join(parts) + ".")
    random.Random(0).shuffle(texts)  # mix parts of speech: the first n texts are not all nouns
    return f"wordnet-glosses-{digest.hexdigest()[:12]}", texts[:n]


def python_docstrings(n: int) -> tuple[str, list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if path.parent.name in ("test", "tests", "idlelib", "turtledemo") or path.name.startswith("test"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes = [tree] + [node for node in ast.walk(tree)
                          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node)
            for para in (doc or "").split("\n\n"):
                text = " ".join(para.split())
                if len(text.split()) >= 8 and ">>>" not in text and sum(c.isalpha() for c in text) > 0.7 * len(text):
                    texts.append(text)
        if len(texts) >= n:
            break
    if not texts:
        raise DataError(f"edit.stats.corpus: no standard-library docstrings found under {root}")
    version = ".".join(map(str, sys.version_info[:3]))
    return f"python-docstrings-{version}", texts[:n]


NAMED_CORPORA: dict[str, Callable[[int], tuple[str, list[str]]]] = {
    "wordnet-glosses": wordnet_glosses,
    "python-docstrings": python_docstrings,
}
