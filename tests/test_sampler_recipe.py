"""docs/samplers.md's "Adding a sampler" recipe, checked: module.samplers.check_registration() passes the shipped
samplers and names the step (and the file) a deliberately incomplete sampler misses; descriptions state their
defaults from the Params dataclasses."""
from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass

import pytest

import conf.params
import module.samplers as registry
from module.samplers import SAMPLERS, check_registration
from module.samplers.base import NegativeOutput, NegativeSampler
from tests.conftest import REPO


@dataclass
class FooParams:
    n_candidates: int = 7  # M
    knob: float = 0.25


class FooSampler(NegativeSampler):
    """A sampler that takes the first candidate."""

    name = "foo"
    Params = FooParams
    description = "the first of M={n_candidates} candidates"

    def negatives(self, batch, user_emb, pos_emb) -> NegativeOutput:
        items = batch.cands[:, 0]
        return NegativeOutput(batch.items(items), items, items)


STEPS = ["params", "params_entry", "registry", "docs_row", "docs_setting", "configuration", "negatives",
         "description", "hard_coded"]


def _register(monkeypatch, tmp_path, skip: str = "") -> tuple[type[NegativeSampler], "object"]:
    """Do every step of the recipe for `foo` (temporarily) except `skip`; returns the class and the docs folder."""
    cls = FooSampler
    if skip == "negatives":
        cls = type("FooSampler", (NegativeSampler,), {"name": "foo", "Params": FooParams,
                                                       "description": FooSampler.description_template})
    elif skip == "description":
        cls = type("FooSampler", (FooSampler,), {"description": ""})
    elif skip == "hard_coded":
        cls = type("FooSampler", (FooSampler,), {"description": "the first of M=7 candidates"})
    if skip != "params":
        monkeypatch.setattr(conf.params, "FooParams", FooParams, raising=False)
    if skip != "params_entry":
        monkeypatch.setitem(conf.params.PARAMS, "foo", FooParams)
    if skip != "registry":
        monkeypatch.setitem(registry.SAMPLERS, "foo", cls)
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs", docs)  # the sampler pages (adar.md, cnsdiff.md) document settings too
    page = (docs / "samplers.md").read_text()
    row = ("| `foo` | the first candidate | nobody | `n_candidates` 7"
           + ("" if skip == "docs_setting" else ", `knob` 0.25") + " | `--set negative.sampler=foo` |")
    if skip != "docs_row":
        last = [line for line in page.splitlines() if line.startswith("| `cnsdiff` |")][0]
        page = page.replace(last, last + "\n" + row)
    (docs / "samplers.md").write_text(page)
    config = (docs / "configuration.md").read_text()
    if skip != "configuration":
        config = re.sub(r"(\| `negative\.sampler` \|[^\n]*?)`cnsdiff`", r"\1`cnsdiff`, `foo`", config, count=1)
    (docs / "configuration.md").write_text(config)
    return cls, docs


def test_the_shipped_samplers_are_complete():
    assert check_registration() == []


def test_a_sampler_with_every_step_done_passes(monkeypatch, tmp_path):
    cls, docs = _register(monkeypatch, tmp_path)
    assert check_registration([cls], docs=docs) == []


EXPECTED = {  # the missing step -> what its message must say
    "params": ("step 1", "FooParams is not in conf/params.py"),
    "params_entry": ("step 2", 'PARAMS entry missing: add "foo": FooParams to PARAMS in conf/params.py'),
    "registry": ("step 4", "registry line missing", "SAMPLERS in module/samplers/__init__.py"),
    "docs_row": ("step 5", "docs row missing", "docs/samplers.md"),
    "docs_setting": ("step 5", "`knob`", "docs/samplers.md"),
    "configuration": ("step 6", "negative.sampler row of docs/configuration.md"),
    "negatives": ("step 3", "negatives() missing", "tests/test_sampler_recipe.py"),
    "description": ("step 3", "description missing"),
    "hard_coded": ("step 3", "hard-codes the default 7 of FooParams.n_candidates", "{n_candidates}"),
}


@pytest.mark.parametrize("skip", STEPS)
def test_a_missing_step_is_named_with_its_file(monkeypatch, tmp_path, skip):
    cls, docs = _register(monkeypatch, tmp_path, skip)
    problems = check_registration([cls], docs=docs)
    assert len(problems) == 1, problems
    assert problems[0].startswith("foo: ")
    for part in EXPECTED[skip]:
        assert part in problems[0], problems[0]


def test_a_sampler_without_a_params_dataclass_is_named(monkeypatch, tmp_path):
    cls, docs = _register(monkeypatch, tmp_path, "params")
    bare = type("FooSampler", (NegativeSampler,), {"name": "foo", "negatives": FooSampler.negatives,
                                                    "description": "the first candidate"})
    monkeypatch.setitem(registry.SAMPLERS, "foo", bare)
    monkeypatch.delitem(conf.params.PARAMS, "foo")
    problems = check_registration([bare], docs=docs)
    assert problems == ["foo: step 1, Params dataclass missing: add @dataclass class FooParams to conf/params.py "
                        "and set Params to it in tests/test_sampler_recipe.py"]


def test_a_params_entry_without_a_sampler_and_a_changed_order_are_named(monkeypatch):
    # copies, so the shipped tables keep their order whatever happens here
    monkeypatch.setattr(conf.params, "PARAMS", {**conf.params.PARAMS, "bar": FooParams})
    assert check_registration() == ["bar: step 2, PARAMS entry in conf/params.py names no sampler class (remove it, "
                                     "or fix the sampler's name)"]
    reordered = {name: cls for name, cls in conf.params.PARAMS.items() if name not in ("rns", "bar")}
    monkeypatch.setattr(conf.params, "PARAMS", {**reordered, "rns": conf.params.PARAMS["rns"]})
    problems = check_registration()
    assert len(problems) == 1 and problems[0].startswith("order: step 4") and "conf/params.py" in problems[0]


def test_a_sampler_file_without_its_registry_line_is_found(monkeypatch):
    """A NegativeSampler defined in a module of module/samplers/ but not in SAMPLERS is named."""
    monkeypatch.setattr(registry, "SAMPLERS", {name: cls for name, cls in SAMPLERS.items() if name != "dns"})
    assert check_registration() == ["dns: step 4, registry line missing: import DNSSampler and add DNSSampler.name: "
                                    "DNSSampler to SAMPLERS in module/samplers/__init__.py"]


def test_importing_the_registry_checks_nothing_and_keeps_its_samplers():
    """check_registration runs only when called: the registry's import-time content is the shipped one."""
    assert list(SAMPLERS) == list(conf.params.PARAMS)
    assert all(SAMPLERS[name].Params is cls for name, cls in conf.params.PARAMS.items())


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_description_is_filled_from_its_params_defaults(name):
    cls = SAMPLERS[name]
    assert cls.description == cls.description_template.format_map(cls.defaults())
    assert "{" not in cls.description and cls.description.strip()


def test_a_description_follows_a_changed_default():
    cls = SAMPLERS["dns"]
    changed = dataclasses.make_dataclass("DNSParams", [("n_candidates", int, dataclasses.field(default=48))])
    sub = type("DNSSampler", (cls,), {"Params": changed})
    assert "M=48" in sub.description and "M=32" not in sub.description
    assert f"M={cls.Params().n_candidates}" in cls.description


def test_a_description_naming_an_unknown_field_fails_at_class_definition():
    with pytest.raises(TypeError, match=r"\{n_cand\} is not a field of FooParams"):
        type("Broken", (FooSampler,), {"description": "the first of M={n_cand} candidates"})


def test_the_recipe_names_every_file_it_edits():
    page = (REPO / "docs" / "samplers.md").read_text()
    recipe = page[page.index("## Adding a sampler"):page.index("## Simple baselines")]
    steps = re.findall(r"^(\d)\. \*\*", recipe, flags=re.M)
    assert steps == ["1", "2", "3", "4", "5", "6"]
    for path in ("conf/params.py", "module/samplers/foo.py", "module/samplers/__init__.py", "configuration.md",
                 "tests/test_sampler_recipe.py", "PARAMS", "SAMPLERS", "description"):
        assert path in recipe, path


def test_the_shipped_docs_copy_is_unchanged_by_the_checks(tmp_path):
    """check_registration reads the docs it is given and writes nothing."""
    copy = tmp_path / "docs"
    shutil.copytree(REPO / "docs", copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    assert check_registration(docs=copy) == []
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
