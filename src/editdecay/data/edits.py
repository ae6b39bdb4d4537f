"""Read edit datasets (CounterFact, MultiCounterFact, zsRE, our own records) into :class:`EditRecord`.

Sources (``data.source``): ``counterfact`` / ``mcf`` read ROME/MEMIT JSON, ``zsre`` reads the
MEND-eval JSON (``zsre_mend_eval.json``), ``records`` reads our own record shape
(:meth:`EditRecord.from_dict`), and ``hf`` reads anything ``datasets.load_dataset`` can read from a
local path (or a hub id, when there is network) and converts its rows in ``data.hf_format``.
``world`` is generated from the fact world elsewhere (:mod:`editdecay.world`), not read here.

Files are ``.json`` (one JSON array of records) or ``.jsonl`` (one object per line, blank lines
skipped). Every problem is a one-line :class:`DataError` naming the file and line, or the record
(0-based index in the file) and field: ``zsre record 12: field 'subject': ...``. With
``on_bad_record="skip"`` bad records are dropped and one warning says how many and why.

zsRE target conventions
-----------------------
A zsRE row has a question ``src`` about ``subject``, the true ``answers`` and a counterfactual
``alt``. The two code bases that use it disagree on what the edit is:

* ``memit`` (default): MEMIT's ``dsets/zsre.py``, which AlphaEdit and this study reuse, edits the
  model towards the *true* answer: ``target_new = answers[0]`` and there is no true target
  (``target_true = None``); efficacy is teacher-forced token accuracy on ``answers[0]``.
* ``easyedit``: EasyEdit edits towards the counterfactual: ``target_new = alt`` and
  ``target_true = answers[0]``. Here a few rows are unusable: ``alt`` is empty, or equals
  ``answers[0]`` so the edit would change nothing.

Both conventions share the rest of MEMIT's mapping: ``prompt`` is ``src`` with the first occurrence
of ``subject`` replaced by ``{}``, ``case_id`` is the row index unless the row has a ``case_id``,
``paraphrase_prompts = [rephrase]``, ``neighborhood_prompts = [loc]`` (kept as written, with its
``nq question: `` prefix) and ``neighborhood_answers = [loc_ans]``. Targets and answers are stripped
of surrounding whitespace (some ``alt`` values start with a space); all text is normalized to
Unicode NFC and otherwise kept as is. ``alt``, ``answers`` and ``pred`` are kept in ``meta``.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from editdecay.config import DataConfig, TrialConfig
from editdecay.data.records import EditRecord, RecordError
from editdecay.errors import DataError

log = logging.getLogger(__name__)

OnBadRecord = Literal["error", "skip"]
ZsreTarget = Literal["memit", "easyedit"]
RowConverter = Callable[[Mapping[str, Any], int], EditRecord]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
# File extension -> the `datasets` builder that reads it.
HF_BUILDERS: Mapping[str, str] = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
SEQUENCE_FIELDS = ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_answers", "attribute_prompts")
SHOWN_SKIPS = 3  # how many skipped records the warning describes


# --------------------------------------------------------------------------------------------
# Entry point


def load_edit_file(cfg: DataConfig, *, hf_cache_dir: str | os.PathLike[str] | None = None) -> list[EditRecord]:
    """Read ``cfg.path`` as ``cfg.source`` and convert it; ``hf_cache_dir`` is for ``datasets``."""
    if cfg.source == "world":
        raise ValueError("data.source 'world' is generated from the fact world (editdecay.world), not read from a file")
    if not cfg.path:
        raise DataError(f"data.path is required when data.source is '{cfg.source}'")
    if cfg.source == "hf":
        rows: list[Any] = read_hf_rows(cfg.path, cfg.hf_split, cache_dir=hf_cache_dir)
        fmt, source = cfg.hf_format, f"hf ({cfg.hf_format})"
        if fmt == "records":  # Arrow cannot tell a null target_true from a missing one
            rows = [{"target_true": None, **row} for row in rows]
    else:
        rows = read_json_rows(cfg.path)
        fmt, source = ("counterfact" if cfg.source == "mcf" else cfg.source), cfg.source
    if not rows:
        raise DataError(f"data.path: {cfg.path} holds no records")
    if fmt == "counterfact":
        return convert_counterfact(rows, cfg.on_bad_record, source=source)
    if fmt == "zsre":
        return convert_zsre(rows, cfg.zsre_target, cfg.on_bad_record, source=source)
    return convert_records(rows, cfg.on_bad_record, source=source)


# --------------------------------------------------------------------------------------------
# Readers


def read_json_rows(path: str | os.PathLike[str]) -> list[Any]:
    """The rows of a ``.json`` array or a ``.jsonl`` file (one object per line, blank lines skipped)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"data.path: {p} is a directory; give a .json or .jsonl file (or use data.source: hf)")
    if not p.is_file():
        raise DataError(f"data.path: file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{p}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if p.suffix.lower() in JSONL_SUFFIXES:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{p}:{lineno}: malformed JSON ({err.msg})") from None
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{p}:{err.lineno}: malformed JSON ({err.msg})") from None
    if not isinstance(data, list):
        raise DataError(f"{p}: the top level must be a JSON array of records, got {_json_type(data)}")
    return data


def read_hf_rows(path: str, split: str, *, cache_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Rows of ``split`` read by ``datasets.load_dataset`` from a local file/directory or a hub id."""
    import datasets  # heavy: imported only when a dataset is actually read

    p = Path(path).expanduser()
    hub = not (p.is_file() or p.is_dir())
    if p.is_file():
        builder = HF_BUILDERS.get(p.suffix.lower())
        if builder is None:
            allowed = ", ".join(HF_BUILDERS)
            raise DataError(f"data.path: {p}: no datasets builder for '{p.suffix}' files; use one of {allowed}")
        args: dict[str, Any] = {"path": builder, "data_files": str(p)}
    elif p.is_dir():
        args = {"path": str(p)}
    elif _looks_local(path):
        raise DataError(f"data.path: file not found: {p}")
    else:
        args = {"path": path}
    try:
        cache = str(cache_dir) if cache_dir is not None else None
        ds = datasets.load_dataset(**args, split=split, cache_dir=cache)
    except Exception as err:  # datasets raises many types; all mean "could not read it"
        raise DataError(_hf_failure(f"'{path}'" if hub else str(p), split, err, hub=hub)) from None
    # Arrow unifies the columns of all rows: keys a row lacked come back as None. Drop them again.
    return [{k: v for k, v in row.items() if v is not None} for row in ds.to_list()]


def _looks_local(path: str) -> bool:
    """A path meant as a local file (not a hub id like ``owner/name``)."""
    return path.startswith(("/", ".", "~")) or Path(path).suffix.lower() in HF_BUILDERS or path.count("/") > 1


def _hf_failure(where: str, split: str, err: Exception, *, hub: bool) -> str:
    reason = (str(err).strip().splitlines() or [""])[0] or type(err).__name__
    cause = err.__cause__ or err.__context__
    if cause is not None and str(cause).strip():
        reason += f": {str(cause).strip().splitlines()[0]}"
    reason = reason if len(reason) <= 300 else reason[:297] + "..."
    if hub:
        return (
            f"data.path: cannot load {where} from the Hugging Face Hub ({reason}); "
            "without network, download it and point data.path at the local copy"
        )
    return f"data.path: datasets could not read split '{split}' of {where} ({reason})"


def _json_type(value: Any) -> str:
    names = {dict: "an object", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------------------------
# Converters


def convert_counterfact(
    rows: Iterable[Any], on_bad_record: OnBadRecord = "error", *, source: str = "counterfact"
) -> list[EditRecord]:
    """ROME/MEMIT CounterFact and MultiCounterFact rows (``requested_rewrite`` and prompt lists)."""
    return _convert(rows, _counterfact_record, source, on_bad_record)


def convert_zsre(
    rows: Iterable[Any],
    target: ZsreTarget = "memit",
    on_bad_record: OnBadRecord = "error",
    *,
    source: str = "zsre",
) -> list[EditRecord]:
    """MEND-eval zsRE rows; ``target`` picks the convention (see the module docstring)."""
    if target not in ("memit", "easyedit"):
        raise ValueError(f"zsRE target convention must be 'memit' or 'easyedit', got {target!r}")
    return _convert(rows, lambda row, index: _zsre_record(row, index, target), source, on_bad_record)


def convert_records(
    rows: Iterable[Any], on_bad_record: OnBadRecord = "error", *, source: str = "records"
) -> list[EditRecord]:
    """Our own record shape: the fields of :class:`EditRecord`, as written by ``records_to_jsonl``."""
    return _convert(rows, _own_record, source, on_bad_record)


def _convert(rows: Iterable[Any], convert: RowConverter, source: str, on_bad_record: OnBadRecord) -> list[EditRecord]:
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    good: list[EditRecord] = []
    bad: list[str] = []
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, Mapping):
                raise RecordError("<record>", f"must be a JSON object, got {_json_type(row)}")
            good.append(convert(row, index))
        except RecordError as err:
            if on_bad_record == "error":
                raise DataError(f"{source} record {index}: {err}") from None
            bad.append(f"record {index}: {err}")
    if bad and not good:
        raise DataError(f"{source}: all {len(bad)} records are bad; first: {bad[0]}")
    if bad:
        more = f"; and {len(bad) - SHOWN_SKIPS} more" if len(bad) > SHOWN_SKIPS else ""
        log.warning(
            "%s: skipped %d of %d bad records (on_bad_record=skip): %s%s",
            source, len(bad), len(bad) + len(good), "; ".join(bad[:SHOWN_SKIPS]), more,
        )
    return good


def _counterfact_record(row: Mapping[str, Any], index: int) -> EditRecord:
    rr = _mapping(row, "requested_rewrite")
    new = _mapping(rr, "target_new", "requested_rewrite.")
    true = _mapping(rr, "target_true", "requested_rewrite.")
    target_true = _target(true, "str", "requested_rewrite.target_true.")
    neighborhood = _str_list(row, "neighborhood_prompts")
    meta = {
        "target_new_id": new.get("id"),
        "target_true_id": true.get("id"),
        "pararel_idx": row.get("pararel_idx"),
        "generation_prompts": _str_list(row, "generation_prompts"),
    }
    return EditRecord(
        case_id=_case_id(row, index),
        subject=_text(rr, "subject", "requested_rewrite."),
        prompt=_text(rr, "prompt", "requested_rewrite."),
        target_new=_target(new, "str", "requested_rewrite.target_new."),
        target_true=target_true,
        paraphrase_prompts=_str_list(row, "paraphrase_prompts"),
        neighborhood_prompts=neighborhood,
        neighborhood_answers=[target_true] * len(neighborhood),
        relation_id=_optional_text(rr, "relation_id", "requested_rewrite."),
        style="counterfact",
        attribute_prompts=_str_list(row, "attribute_prompts"),
        meta={k: v for k, v in meta.items() if v not in (None, [])},
    )


def _zsre_record(row: Mapping[str, Any], index: int, target: ZsreTarget) -> EditRecord:
    subject = _text(row, "subject")
    src = _text(row, "src")
    if not subject.strip():
        raise RecordError("subject", "is empty")
    if subject not in src:
        raise RecordError("subject", f"{subject!r} does not occur in src {src!r}")
    answers = _str_list(row, "answers", required=True)
    if not answers or not answers[0].strip():
        raise RecordError("answers", "is empty" if not answers else "answers[0] is empty")
    answer = answers[0].strip()
    if target == "easyedit":
        alt = _text(row, "alt").strip()
        if not alt:
            raise RecordError("alt", "is empty (the easyedit convention edits towards alt)")
    else:
        alt = (_optional_text(row, "alt") or "").strip()
    meta = {"alt": alt, "answers": [a.strip() for a in answers], "pred": _optional_text(row, "pred")}
    return EditRecord(
        case_id=_case_id(row, index),
        subject=subject,
        prompt=src.replace(subject, "{}", 1),
        target_new=answer if target == "memit" else alt,
        target_true=None if target == "memit" else answer,
        paraphrase_prompts=[_text(row, "rephrase")],
        neighborhood_prompts=[_text(row, "loc")],
        neighborhood_answers=[_target(row, "loc_ans")],
        style="zsre",
        meta={k: v for k, v in meta.items() if v is not None},
    )


def _own_record(row: Mapping[str, Any], index: int) -> EditRecord:
    for name in SEQUENCE_FIELDS:
        if name in row:
            _str_list(row, name)  # type check with a field-naming message before EditRecord sees it
    if "meta" in row and not isinstance(row["meta"], Mapping):
        raise RecordError("meta", f"must be an object, got {_json_type(row['meta'])}")
    if "case_id" in row:
        _case_id(row, index)
    for name in ("subject", "prompt", "target_new", "target_true", "relation_id"):
        if row.get(name) is not None:
            _text(row, name)
    if "target_true" not in row:
        raise RecordError("target_true", "is missing (use null when the dataset has no true target)")
    return EditRecord.from_dict(dict(row))


# --------------------------------------------------------------------------------------------
# Field access with field-naming errors; `where` is the dotted prefix of nested fields.


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _get(obj: Mapping[str, Any], key: str, where: str = "") -> Any:
    if obj.get(key) is None:
        raise RecordError(f"{where}{key}", "is missing")
    return obj[key]


def _mapping(obj: Mapping[str, Any], key: str, where: str = "") -> Mapping[str, Any]:
    value = _get(obj, key, where)
    if not isinstance(value, Mapping):
        raise RecordError(f"{where}{key}", f"must be an object, got {_json_type(value)}")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    value = _get(obj, key, where)
    if not isinstance(value, str):
        raise RecordError(f"{where}{key}", f"must be a string, got {_json_type(value)}")
    return _nfc(value)


def _optional_text(obj: Mapping[str, Any], key: str, where: str = "") -> str | None:
    return _text(obj, key, where) if obj.get(key) is not None else None


def _target(obj: Mapping[str, Any], key: str, where: str = "") -> str:
    value = _text(obj, key, where).strip()
    if not value:
        raise RecordError(f"{where}{key}", "is empty")
    return value


def _str_list(obj: Mapping[str, Any], key: str, where: str = "", *, required: bool = False) -> list[str]:
    value = _get(obj, key, where) if required else obj.get(key)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise RecordError(f"{where}{key}", f"must be a list of strings, got {_json_type(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RecordError(f"{where}{key}", f"entry {i} must be a string, got {_json_type(item)}")
    return [_nfc(item) for item in value]


def _case_id(row: Mapping[str, Any], index: int) -> int | str:
    value = row.get("case_id", index)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RecordError("case_id", f"must be an integer or a string, got {_json_type(value)}")
    return value


def load_edit_dataset(cfg: TrialConfig) -> list[EditRecord]:
    """The trial's edit records: the fact world's (``data.source: world``) or a file's."""
    if cfg.data.source != "world":
        return check_unique_case_ids(load_edit_file(cfg.data), cfg.data.path)
    from editdecay.world.facts import World

    world = World(cfg.world)
    if cfg.data.world_format == "zsre":
        # Through the real zsRE converter, so the world's question records obey the same rules.
        return convert_zsre(world.zsre_rows(), target=cfg.data.zsre_target, on_bad_record=cfg.data.on_bad_record,
                            source="world zsre")
    return world.counterfact_records()


def check_unique_case_ids(records: list[EditRecord], source: str | None) -> list[EditRecord]:
    """Per-edit tables are joined on ``case_id``: a repeated id (or ``5`` and ``"5"``, which the
    tables cannot tell apart) would cross-join rows, so it fails here, at load, naming the ids."""
    seen: dict[str, int | str] = {}
    repeated: list[str] = []
    for r in records:
        text = str(r.case_id)
        if text in seen:
            first = seen[text]
            repeated.append(repr(r.case_id) if type(first) is type(r.case_id) else f"{first!r} and {r.case_id!r}")
        else:
            seen[text] = r.case_id
    if repeated:
        more = f" (and {len(repeated) - 5} more)" if len(repeated) > 5 else ""
        raise DataError(f"data.path: {source}: case_id repeated: {', '.join(repeated[:5])}{more}; every record needs "
                        "its own case_id (5 and \"5\" count as the same)")
    return records
