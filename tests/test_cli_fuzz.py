"""Randomized CLI: argument values and config overrides drawn by hypothesis, run in-process through
``editdecay.cli.main``. Whatever comes in, the CLI answers with an exit status and at most one
``editdecay: error:`` line — never a traceback — and never exits 0 with a value out of its range.

The oracle is independent of the parser: integer options are valid when ``int()`` reads them and
they lie in the documented range; numeric config keys are valid when the value is a number within
the bounds the schema declares (pydantic ``ge``/``gt``/``le``/``lt``), finite, and whole for
integer keys. Valid values are steered into a cheap failure that comes later (an ``--out`` under a
file, a missing sweep file), so a valid value never starts real work and the exit status still
tells which check stopped it. Bounded to well under a minute on 2 cores.
"""

from __future__ import annotations

import math
import os
import types
import typing
from pathlib import Path

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from editdecay.cli import main
from editdecay.config import TrialConfig

from conftest import REPO

TINY = str(REPO / "configs" / "tiny.yaml")
# EDITDECAY_FUZZ_EXAMPLES=2000 for a longer hunt; 150 per test keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("EDITDECAY_FUZZ_EXAMPLES", "150")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def call(capsys, argv: list[str]) -> tuple[int, list[str]]:
    code = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out, (argv, captured.err[-2000:])
    lines = [line for line in captured.err.splitlines() if line.startswith("editdecay")]
    assert len(lines) <= 1, (argv, lines)
    return code, lines


@pytest.fixture(scope="module")
def blocked(tmp_path_factory) -> Path:
    """A plain file: any output path under it fails, after the arguments were accepted."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "afile").write_text("x")
    return root


# ------------------------------------------------------------------------------------------------
# Integer options

INT_OPTIONS = {  # option: (command, lowest, highest)
    "--records": ("trace", 1, None), "--window": ("trace", 1, None), "--noise-samples": ("trace", 1, None),
    "--n-layers": ("trace", 1, None), "--port": ("server", 1, 65535), "--workers": ("server", 1, 256),
    "--max-concurrent": ("sweep", 1, None), "--show": ("data", 0, None),
}

option_values = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["", "x", "1.5", "nan", "inf", "-0", "+3", " 7 ", "1_000", "0x10", "65536", "99999", "9" * 30]),
    st.text(max_size=6),
)


def int_valid(text: str, low: int, high: int | None) -> bool:
    try:
        value = int(text)
    except ValueError:
        return False
    return value >= low and (high is None or value <= high)


@FUZZ
@given(option=st.sampled_from(sorted(INT_OPTIONS)), value=option_values)
def test_integer_options_are_range_checked(option, value, blocked, capsys):
    command, low, high = INT_OPTIONS[option]
    prefix = {"trace": ["trace", TINY, "--out", str(blocked / "afile" / "out")],
              "server": ["server", "--root", str(blocked / "afile" / "srv")],
              "sweep": ["sweep", str(blocked / "no-such-sweep.yaml")],
              "data": ["data", "data.source=records", f"data.path={blocked / 'no-such.jsonl'}"]}[command]
    code, lines = call(capsys, [*prefix, f"{option}={value}"])
    assert code == 2 and lines, (option, value)  # valid values run into the blocked path / missing file
    mentions = f"argument {option}" in lines[0]
    assert mentions == (not int_valid(value, low, high)), (option, value, lines)


# ------------------------------------------------------------------------------------------------
# Config overrides on numeric keys


def _leaf_fields(model: type[BaseModel] = TrialConfig, prefix: str = ""):
    """``(dotted key, field, the annotation's union members)`` for every non-section config field."""
    for name, field in model.model_fields.items():
        ann = field.annotation
        args = typing.get_args(ann) if typing.get_origin(ann) in (typing.Union, types.UnionType) else (ann,)
        section = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if section is not None:
            yield from _leaf_fields(section, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field, args


def _numeric_fields() -> dict[str, tuple[type, bool, list]]:
    """dotted key -> (int or float, None allowed, bound constraints) for every numeric config key."""
    out = {}
    for key, field, args in _leaf_fields():
        kinds = [a for a in args if a in (int, float)]
        if len(kinds) == 1 and all(a in (int, float, type(None)) for a in args):
            bounds = [m for m in field.metadata if isinstance(m, (annotated_types.Ge, annotated_types.Gt,
                                                                   annotated_types.Le, annotated_types.Lt))]
            out[key] = (kinds[0], type(None) in args, bounds)
    return out


NUMERIC = _numeric_fields()

numbers = st.one_of(st.integers(-(10**7), 10**7), st.floats(allow_nan=True, allow_infinity=True, width=32),
                    st.sampled_from([0, 1, -1, 0.5, 1.0, 0.999, 1e-12, 2**31, -(2**31)]), st.none())


def render(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)  # YAML 1.1 needs a dot
    return str(value)


def number_valid(key: str, value) -> bool:
    kind, nullable, bounds = NUMERIC[key]
    if value is None:
        return nullable
    if isinstance(value, float) and not math.isfinite(value):
        return False
    if kind is int and isinstance(value, float) and not value.is_integer():
        return False
    for b in bounds:
        if (isinstance(b, annotated_types.Ge) and not value >= b.ge) or (isinstance(b, annotated_types.Gt) and not value > b.gt) \
                or (isinstance(b, annotated_types.Le) and not value <= b.le) or (isinstance(b, annotated_types.Lt) and not value < b.lt):
            return False
    return True


def test_the_oracle_sees_the_schema():
    assert len(NUMERIC) > 40 and NUMERIC["edit.num_edits"][0] is int and NUMERIC["finetune.lr"][1]


@FUZZ
@given(key=st.sampled_from(sorted(NUMERIC)), value=numbers)
def test_numeric_overrides_never_exit_0_out_of_range(key, value, blocked, capsys):
    override = f"{key}={render(value)}"
    code, lines = call(capsys, ["config", TINY, override])
    assert code in (0, 2), (override, code)
    if not number_valid(key, value):
        assert code == 2 and key in lines[0], (override, lines)
        # ... and a trial with it fails the same way before anything exists (no store, no cache)
        store = blocked / "fuzz.db"
        code, lines = call(capsys, ["trial", TINY, f"cache_dir={blocked / 'cache'}", f"tracking.uri=sqlite:///{store}", override])
        assert code == 2 and key in lines[0] and not store.exists() and not (blocked / "cache").exists(), (override, lines)
    elif code == 2:  # in range for the key alone; a rule across keys (heads dividing the width, ...) refused it
        assert "config" in lines[0], (override, lines)


# ------------------------------------------------------------------------------------------------
# Whole command lines from a vocabulary (safe commands only: nothing here can start real work)

TOKENS = ["edit.num_edits=0", "edit.num_edits=3", "seed=abc", "seed=7", "world.n_downstream=40", "finetune.lr=-1",
          "edit.layers=[]", "model.device=tpu", "nonsense=1", "=1", "a.b.c=", "edit=3", "--overrides", "seed=1 edit.num_edits=2",
          "-v", "--show", "0", "-3", "--out", "--json", "--force", "--frobnicate", TINY, "/no/such.yaml", "x", "", "--"]


@FUZZ
@given(command=st.sampled_from(["config", "data", "world"]), tokens=st.lists(st.sampled_from(TOKENS), max_size=6))
def test_command_lines_from_a_vocabulary(command, tokens, blocked, capsys, tmp_path_factory):
    argv = [command, *tokens]
    if command == "world":  # its output must land somewhere harmless (or be refused before writing)
        argv += ["--out", str(tmp_path_factory.mktemp("world") / "w"), "world.n_downstream=40"]
    code, lines = call(capsys, argv)
    assert code in (0, 2), (argv, code)
    assert (code == 0) == (not lines), (argv, lines)


# ------------------------------------------------------------------------------------------------
# Config overrides on choice keys (Literal): only the listed values pass


def _choice_fields() -> dict[str, tuple]:
    return {key: typing.get_args(field.annotation) for key, field, _ in _leaf_fields()
            if typing.get_origin(field.annotation) is typing.Literal}


CHOICES = _choice_fields()


@FUZZ
@given(data=st.data())
def test_choice_overrides_accept_only_their_values(data, capsys):
    import yaml

    key = data.draw(st.sampled_from(sorted(CHOICES)))
    text = data.draw(st.one_of(st.sampled_from(CHOICES[key]), st.sampled_from(["", "none", "null", "yes", "GPT2", "lora ", "1"]),
                               st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=8)))
    try:
        parsed = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        parsed = text
    code, lines = call(capsys, ["config", TINY, f"{key}={text}"])
    if parsed not in CHOICES[key] or isinstance(parsed, bool):
        assert code == 2 and key in lines[0], (key, text, lines)
    else:
        assert code in (0, 2), (key, text)  # a listed value; a rule across keys may still refuse it
        assert code == 0 or "config" in lines[0], (key, text, lines)
