"""Typed configs: YAML + dotted overrides, validated once, one-line errors naming the key."""

from __future__ import annotations

import pytest

from editdecay.config import TrialConfig, flatten, load_config, stable_hash
from editdecay.errors import ConfigError, DataError

from conftest import REPO


def test_defaults_and_shipped_configs_validate():
    cfg = load_config()
    assert cfg.model.name == "toy" and cfg.edit.method == "memit" and cfg.finetune.layers == "all"
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert isinstance(load_config(path), TrialConfig), path


def test_overrides_are_typed_by_yaml_and_schema():
    cfg = load_config(REPO / "configs" / "toy.yaml", ["edit.method=alphaedit", "edit.num_edits=1000",
                                                       "finetune.layers=[0, 2]", "model.toy.arch=llama", "eval.ds_mode=generate"])
    assert cfg.edit.method == "alphaedit" and cfg.edit.num_edits == 1000
    assert cfg.finetune.layers == [0, 2]
    assert cfg.model.toy.arch == "llama"
    assert cfg.world.n_countries == 100  # untouched YAML values survive


def test_config_is_frozen_once_validated():
    cfg = load_config()
    with pytest.raises(Exception):
        cfg.edit.method = "alphaedit"  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("edit.methd=memit", "unknown config key 'edit.methd'; allowed here: method, num_edits, selection, layers, chunk_size"),
        ("editt.method=memit", "unknown config key 'editt'"),
        ("model.toy.depth=3", "unknown config key 'model.toy.depth'"),
        ("edit.method=rome", "config key 'edit.method': got 'rome'; allowed: 'none', 'memit' or 'alphaedit'"),
        ("edit.num_edits=many", "config key 'edit.num_edits': input should be a valid integer"),
        ("edit.num_edits=0", "config key 'edit.num_edits': input should be greater than or equal to 1"),
        ("finetune.layers=some", "config key 'finetune.layers'"),
        ("model.toy.n_head=3", "n_embd (128) must be divisible by n_head (3)"),
        ("data.source=zsre", "data.path is required when data.source is 'zsre'"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_edited_layers_without_an_editor_is_rejected():
    with pytest.raises(ConfigError, match="finetune.layers=edited needs an editor"):
        load_config(None, ["edit.method=none", "finetune.layers=edited"])
    assert load_config(None, ["edit.method=none", "finetune.layers=[1]"]).finetune.layers == [1]


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("edit:\n  method: memit\n  layers: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(bad)
    with pytest.raises(DataError, match="file not found"):
        load_config(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["edit.method"])
    with pytest.raises(ConfigError, match="'method' is a value, not a section"):
        load_config(None, ["edit.method=memit", "edit.method.x=1"])


def test_flatten_and_hash_are_stable():
    a = load_config(None, ["edit.num_edits=10"])
    b = load_config(None, ["edit.num_edits=10"])
    c = load_config(None, ["edit.num_edits=11"])
    flat = flatten(a)
    assert flat["edit.method"] == "memit" and flat["model.toy.arch"] == "gpt2" and flat["edit.num_edits"] == 10
    assert stable_hash(a) == stable_hash(b) != stable_hash(c)
    assert len(stable_hash(a)) == 12
