"""Config resolution: coercion, unknown keys, overrides, presets, params, selection."""
from __future__ import annotations

from pathlib import Path

import pytest

from conf.params import RNSParams
from tests.conftest import REPO, write
from conf.config import load_config, resolve
from util.typing_coerce import ConfigError, coerce

BASE = {"training.set": "a/train.txt", "test.set": "a/test.txt"}


def test_yaml_scalars_are_coerced(tmp_path):
    cfg_file = write(tmp_path / "c.yaml", "training.set: t.txt\ntest.set: s.txt\nreg.lambda: 1e-6\n"
                                          "learning.rate: '0.001'\nmax.epoch: '5'\nitem.ranking.topN: 10,20,50\n")
    cfg = load_config(cfg_file)
    assert cfg.reg_lambda == 1e-6 and isinstance(cfg.reg_lambda, float)
    assert cfg.learning_rate == 0.001 and cfg.max_epoch == 5 and cfg.top_n == [10, 20, 50]


@pytest.mark.parametrize("text,expected", [("false", False), ("no", False), ("0", False), ("True", True),
                                           ("yes", True), (1, True), (False, False)])
def test_bool_coercion(text, expected):
    assert coerce("k", text, bool) is expected


@pytest.mark.parametrize("value,tp", [("maybe", bool), ("5.5", int), (True, int), ("abc", float), (2, bool),
                                      ({"a": 1}, str), ([], list[int])])
def test_bad_values_name_the_key(value, tp):
    with pytest.raises(ConfigError, match="my.key"):
        coerce("my.key", value, tp)


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown config key 'max.epochs'.*'max.epoch'"):
        resolve({**BASE, "max.epochs": 3})


def test_bad_value_and_bad_choice_and_minimum():
    with pytest.raises(ConfigError, match="max.epoch"):
        resolve({**BASE, "max.epoch": "ten"})
    with pytest.raises(ConfigError, match="reg.form"):
        resolve({**BASE, "reg.form": "squared"})
    with pytest.raises(ConfigError, match="batch.size"):
        resolve({**BASE, "batch.size": 0})


def test_command_line_overrides_and_nested_sections(tmp_path):
    cfg_file = write(tmp_path / "c.yaml", "training.set: t.txt\ntest.set: s.txt\nLightGCN:\n  n_layer: 2\n")
    cfg = load_config(cfg_file, ["max.epoch=5", "LightGCN.n_layer=3", "test.set.test_ood=o.txt",
                                 "params.n_negs=2"])
    assert cfg.max_epoch == 5 and cfg.n_layer == 3
    assert cfg.test_set == {"s": REPO / "s.txt", "test_ood": REPO / "o.txt"}  # relative: against the repository
    assert cfg.params == RNSParams(n_negs=2)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(cfg_file, ["max.epoch"])


def test_params_unknown_field_and_bad_value():
    with pytest.raises(ConfigError, match=r"params.rns.n_neg'.*'n_negs'"):
        resolve({**BASE, "params.n_neg": 2})
    with pytest.raises(ConfigError, match="params.rns.n_negs"):
        resolve({**BASE, "params.rns.n_negs": "two"})
    with pytest.raises(ConfigError, match="n_negs must be >= 1"):
        resolve({**BASE, "params.rns.n_negs": 0})
    with pytest.raises(ConfigError, match="unknown sampler"):
        resolve({**BASE, "negative.sampler": "magic"})


def test_preset_fills_files_and_training_set_makes_the_preset_supply_nothing(caplog):
    cfg = resolve({"dataset": "food", "dataset.root": "d"})
    assert cfg.training_set == REPO / "d/food/train.txt" and cfg.valid_set == REPO / "d/food/valid_iid.txt"
    assert set(cfg.test_set) == {"test_iid", "test_ood"} and cfg.data_format == "triples"
    cfg = resolve({"dataset": "food", "dataset.root": "/abs", "valid.set": "v.txt"})  # other file keys replace the preset's
    assert cfg.valid_set == REPO / "v.txt" and cfg.training_set == Path("/abs/food/train.txt")
    with caplog.at_level("WARNING"):
        cfg = resolve({"dataset": "coat", "training.set": "mine/x.txt", "test.set": "t.txt"})
    assert "preset 'coat' ignored because training.set is given" in caplog.text
    assert cfg.dataset is None and cfg.valid_set is None and cfg.data_format is None  # detected when read
    assert cfg.run_tag() == "LightGCN-rns-mine-s2025"  # named after the files' folder, not the preset
    assert resolve({"dataset": "food", "negative.sampler": "cnsdiff", "seed": 7,
                    "params.cnsdiff.preset": "paper"}).run_tag() == "LightGCN-cnsdiff.paper-food-s7"
    with pytest.raises(ConfigError, match="unknown preset 'fod'.*'food'"):
        resolve({"dataset": "fod"})


def test_selection_rule_resolution():
    assert resolve({**BASE, "valid.set": "v.txt"}).selection_rule() == "valid"
    assert resolve(BASE).selection_rule() == "test_all4"
    with pytest.raises(ConfigError, match="needs a validation file"):
        resolve({**BASE, "selection": "valid"})
    with pytest.raises(ConfigError, match="selection.metric"):
        resolve({**BASE, "valid.set": "v.txt", "selection.metric": "Recall@50"})
    with pytest.raises(ConfigError, match="selection.test"):
        resolve({**BASE, "selection.test": "nope"})
    with pytest.raises(ConfigError, match="topN must hold both"):
        resolve({**BASE, "item.ranking.topN": [5], "selection.metric": "Recall@5"})


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path / "bad.yaml", "a: [1, 2\n"))
    with pytest.raises(ConfigError, match="no training data"):
        resolve({"test.set": "t.txt"})
    with pytest.raises(ConfigError, match="no test file"):
        resolve({"training.set": "t.txt"})


def test_shipped_config_resolves_and_round_trips():
    cfg = load_config(REPO / "conf" / "LightGCN.yaml")
    out = cfg.to_dict()
    assert out["max.epoch"] == cfg.max_epoch and out["params"][cfg.negative_sampler]
    again = resolve(out["input"])
    assert again.to_dict() == out


def test_early_stop_files_must_be_eval_files():
    cfg = resolve({**BASE, "valid.set": "v.txt", "test.set": {"ood_valid": "a.txt", "test_ood": "b.txt"},
                   "early_stop.files": "ood_valid"})
    assert cfg.stop_watch == ["ood_valid"]
    with pytest.raises(ConfigError, match=r"early_stop.files: \['nope'\] are not eval files"):
        resolve({**BASE, "valid.set": "v.txt", "early_stop.files": "nope"})


def test_every_config_key_and_sampler_is_in_the_configuration_page():
    """docs/configuration.md's key table is the user's reference: a key or sampler added without a row fails."""
    from conf.config import KEYS
    from module.samplers import SAMPLERS
    page = (REPO / "docs" / "configuration.md").read_text()
    section = page[page.index("## Three layers"):page.index("## Your own data")]
    assert [k for k in KEYS if f"`{k}`" not in section] == []
    sampler_row = next(line for line in section.splitlines() if line.startswith("| `negative.sampler`"))
    assert [name for name in SAMPLERS if f"`{name}`" not in sampler_row] == []


def test_every_sampler_setting_is_named_in_the_sampler_docs():
    """Each field of a sampler's Params dataclass (conf/params.py) is a setting users look up in docs/samplers.md
    or on the sampler's own page (docs/cnsdiff.md, docs/adar.md)."""
    from module.samplers import SAMPLERS
    docs = REPO / "docs"
    table = (docs / "samplers.md").read_text()
    own = {name: (docs / f"{name}.md").read_text() if (docs / f"{name}.md").exists() else "" for name in SAMPLERS}
    missing = [f"{name}.{field}" for name, cls in SAMPLERS.items() for field in cls.Params.__dataclass_fields__
               if f"`{field}`" not in table + own[name]]
    assert missing == []


def test_the_params_table_of_conf_matches_the_sampler_registry():
    from conf.params import PARAMS
    from module.samplers import SAMPLERS
    assert list(PARAMS) == list(SAMPLERS)
    assert all(SAMPLERS[name].Params is cls for name, cls in PARAMS.items())


def test_conf_data_and_util_import_nothing_above_them():
    """The layers: util imports nothing of the project, data only util, conf only data and util (and itself)."""
    import ast
    allowed = {"util": {"util"}, "data": {"data", "util"}, "conf": {"conf", "data", "util"}}
    project = {"base", "bench", "conf", "data", "model", "module", "util", "SELFRec", "main"}
    for layer, ok in allowed.items():
        for path in (REPO / layer).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
                for name in names:
                    top = name.split(".")[0]
                    assert top not in project or top in ok, f"{path.relative_to(REPO)} imports {name}"
