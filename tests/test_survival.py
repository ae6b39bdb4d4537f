"""Survival metrics on hand-made per-edit tables."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest

from editdecay.metrics.survival import flip_table, survival


def test_efr_decrease_survival_by_hand():
    # 5 edits: 4 succeeded after editing; of those 1 flipped; 1 failed edit recovered after FT.
    before = [True, True, True, True, False]
    after = [True, False, True, True, True]
    s = survival(before, after)
    assert s.efr == pytest.approx(1 / 4)
    assert s.survival == pytest.approx(3 / 4)
    # ES 0.8 -> 0.8: the recovered edit hides the flip in the aggregate; EFR does not.
    assert s.decrease == pytest.approx(0.0)
    assert (s.n_edits, s.n_successful, s.n_flipped, s.n_recovered) == (5, 4, 1, 1)
    assert s.as_metrics()["survival.efr"] == pytest.approx(0.25)


def test_all_edits_survive_and_all_flip():
    assert survival([True] * 3, [True] * 3).efr == 0.0
    s = survival([True] * 3, [False] * 3)
    assert s.efr == 1.0 and s.survival == 0.0 and s.decrease == 1.0


def test_all_failed_edits_give_nan_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        s = survival([False, False], [True, False])
    assert math.isnan(s.efr) and math.isnan(s.decrease) and math.isnan(s.survival)
    assert s.n_successful == 0 and s.n_recovered == 1
    assert "no edit succeeded" in caplog.text


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 edits before fine-tuning but 2 after"):
        survival([True, True, False], [True, True])


def test_flip_table_matches_by_case_id():
    edited = pd.DataFrame({"case_id": [3, 1, 2], "es": [True, True, False]})
    finetuned = pd.DataFrame({"case_id": [1, 2, 3], "es": [False, False, True]})
    table = flip_table(edited, finetuned).set_index("case_id")
    assert table.loc[1, "flipped"] and not table.loc[3, "flipped"] and not table.loc[2, "flipped"]
    with pytest.raises(ValueError):
        flip_table(edited, finetuned[finetuned.case_id != 2])
