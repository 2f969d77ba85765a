"""A grid file (conf/grids/NAME.yaml): its sections (the Grid, its `power` and `halving`), read and checked field by
field; a bad file is a ConfigError naming the field (bench.grid exits 2). docs/grids.md describes the fields."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from conf.config import read_yaml
from data.presets import get_preset
from util.typing_coerce import ConfigError

PROTOCOLS = ("valid", "ood_valid", "released", "reference")
TEST_SELECTED = ("released", "reference")  # protocols that select on a test file: one candidate per method


@dataclass
class Grid:
    """A parsed grid file."""

    name: str
    datasets: list[str]
    protocols: list[str]
    seeds: list[int]
    methods: dict[str, dict[str, Any]]  # name -> {"keys", "search", "seeds", "datasets", "dataset_keys"}
    keys: dict[str, Any] = field(default_factory=dict)
    search: dict[str, list] = field(default_factory=dict)
    extra_seeds: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # dataset -> method -> seeds
    ood_valid_fraction: float = 0.3
    file: Optional[Path] = None  # the grid file it was read from (grid.json and the tables name it)
    power: Optional[Power] = None  # more seeds where the answer is decided
    halving: Optional[Halving] = None  # a cheaper first-seed search on some datasets
    deferred: list[str] = field(default_factory=list)  # methods run after every other cell; never the best other

    def candidates(self, method: str) -> list[dict[str, Any]]:
        """Every combination of the method's search values (the grid's, updated by the method's own)."""
        space = {**self.search, **self.methods[method].get("search", {})}
        names = sorted(k for k, v in space.items() if v is not None)  # a method's `KEY: null` drops a grid search
        return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]

    def runs_on(self, dataset: str, method: str) -> bool:
        """Whether a method runs on a dataset (a method's own `datasets` list restricts the grid's)."""
        own = self.methods[method].get("datasets")
        return own is None or dataset in own

    def keys_of(self, dataset: str, method: str) -> dict[str, Any]:
        """A method's config keys on a dataset: its `keys`, updated by its `dataset_keys` for that dataset."""
        spec = self.methods[method]
        return {**spec.get("keys", {}), **(spec.get("dataset_keys") or {}).get(dataset, {})}

    def seeds_of(self, dataset: str, method: str) -> list[int]:
        """The seeds a method runs with on a dataset (the first one chooses the hyperparameters)."""
        extra = self.extra_seeds.get(dataset, {}).get(method, [])
        return list(self.methods[method].get("seeds", self.seeds)) + list(extra)

    def seeds_for(self, dataset: str, method: str, powered: bool) -> list[int]:
        """The seeds a chosen candidate runs with: seeds_of, joined by every `power` seed where the method is a
        powered one in that protocol (a power method, or the best other method there), else by the first
        `power.at_least` seeds of its own."""
        seeds = self.seeds_of(dataset, method)
        if self.power is None:
            return seeds
        more = self.power.seeds if powered else self.power.seeds[: self.power.at_least.get(method, 0)]
        return seeds + [s for s in more if s not in seeds]


@dataclass
class Halving:
    """A grid's `halving` section: successive halving of the first-seed candidates of every trained method on
    these datasets. Every candidate trains `rung` epochs (early_stop.halt_after: the same epochs as a full run's
    first ones); the `keep` best per protocol on the cut curve (bench/protocol.py's order) go on to the full rule,
    continuing from their checkpoint; the choice is made among those."""

    datasets: list[str]
    rung: int
    keep: int


@dataclass
class Power:
    """A grid's `power` section: where the answer is decided, more seeds (bench/verdict.py reads them)."""

    seeds: list[int]  # every seed a powered candidate runs with (with the method's own seeds)
    methods: list[str]  # the methods under test: powered in every dataset and protocol
    best_other: bool = True  # also the best other method of each dataset x protocol, by first-seed validation
    at_least: dict[str, int] = field(default_factory=dict)  # method -> the first N power seeds, wherever it runs


def is_int(v: Any) -> bool:
    """Whether v is a whole number (a bool is not)."""
    return isinstance(v, int) and not isinstance(v, bool)


# the field types of a grid file: kind -> (what the error says it must be, the check)
GRID_TYPES = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "number": ("a number", lambda v: is_int(v) or isinstance(v, float)),
    "mapping": ("a mapping", lambda v: isinstance(v, dict)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "strings": ("a list of names", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "ints": ("a list of integers", lambda v: isinstance(v, list) and all(is_int(x) for x in v)),
}


def _expect(path: Path, where: str, value: Any, kind: str) -> Any:
    """value if it has the grid file's type `kind` (a key of GRID_TYPES), else a ConfigError naming the file,
    the field and what was found."""
    wanted, ok = GRID_TYPES[kind]
    if not ok(value):
        raise ConfigError(f"{path}: `{where}` must be {wanted}, got {value!r}")
    return value


def known_dataset(name: str, where: str) -> None:
    """A ConfigError naming `where` when `name` is not a dataset preset (with data.presets' suggestion): a
    misspelled name must not pass for a dataset that is merely not downloaded."""
    try:
        get_preset(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _single_seeds(path: Path, where: str, seeds: list[int]) -> None:
    """A ConfigError naming a seed that `where` lists twice: one seed is one cell, so a repeat is listed twice
    but tabled once."""
    repeated = [s for i, s in enumerate(seeds) if s in seeds[:i]]
    if repeated:
        raise ConfigError(f"{path}: `{where}` lists seed {repeated[0]} twice ({seeds}); each seed is one cell")


def load_grid(path: Path) -> Grid:
    """Read and check a grid file (every field's type too); a bad one is a ConfigError naming the problem."""
    tree = read_yaml(path)
    known = {"name", "datasets", "protocols", "seeds", "methods", "keys", "search", "extra_seeds",
             "ood_valid_fraction", "power", "halving", "deferred"}
    unknown = set(tree) - known
    if unknown:
        raise ConfigError(f"{path}: unknown grid key(s) {sorted(unknown)} (known: {sorted(known)})")
    for required in ("datasets", "protocols", "seeds", "methods"):
        if not tree.get(required):
            raise ConfigError(f"{path}: `{required}` is missing or empty")
    for field_name, kind in (("name", "str"), ("datasets", "strings"), ("protocols", "strings"), ("seeds", "ints"),
                             ("methods", "mapping"), ("keys", "mapping"), ("search", "mapping"),
                             ("extra_seeds", "mapping"), ("ood_valid_fraction", "number"), ("power", "mapping"),
                             ("halving", "mapping"), ("deferred", "strings")):
        if tree.get(field_name) is not None:
            _expect(path, field_name, tree[field_name], kind)
    for key, values in (tree.get("search") or {}).items():
        _expect(path, f"search.{key}", values, "list")
    for dataset in tree["datasets"]:
        known_dataset(dataset, f"{path}: `datasets`")
    _single_seeds(path, "seeds", tree["seeds"])
    for dataset, per_method in (tree.get("extra_seeds") or {}).items():
        known_dataset(str(dataset), f"{path}: `extra_seeds`")
        for method, seeds in _expect(path, f"extra_seeds.{dataset}", per_method, "mapping").items():
            _expect(path, f"extra_seeds.{dataset}.{method}", seeds, "ints")
            _single_seeds(path, f"extra_seeds.{dataset}.{method}", seeds)
    fraction = tree.get("ood_valid_fraction", 0.3)
    if not 0 < fraction < 1:
        raise ConfigError(f"{path}: `ood_valid_fraction` must be between 0 and 1, got {fraction!r}")
    protocols = list(tree["protocols"])
    if any(p not in PROTOCOLS for p in protocols):
        raise ConfigError(f"{path}: protocols must be among {PROTOCOLS}, got {protocols}")
    for own in TEST_SELECTED:
        if own in protocols and len(protocols) > 1:
            raise ConfigError(f"{path}: `{own}` runs differ from the others; put it in a grid of its own")
    methods = {}
    for name, spec in tree["methods"].items():
        spec = dict(_expect(path, f"methods.{name}", spec, "mapping") if spec is not None else {})
        for entry, kind in (("keys", "mapping"), ("search", "mapping"), ("seeds", "ints"), ("datasets", "strings"),
                            ("dataset_keys", "mapping")):
            if spec.get(entry) is not None:
                _expect(path, f"methods.{name}.{entry}", spec[entry], kind)
        for key, values in (spec.get("search") or {}).items():
            if values is not None:
                _expect(path, f"methods.{name}.search.{key}", values, "list")
        for dataset, keys in (spec.get("dataset_keys") or {}).items():
            _expect(path, f"methods.{name}.dataset_keys.{dataset}", keys, "mapping")
        if spec.get("seeds") is not None:
            _single_seeds(path, f"methods.{name}.seeds", spec["seeds"])
        bad = set(spec) - {"keys", "search", "seeds", "datasets", "dataset_keys"}
        if bad:
            raise ConfigError(f"{path}: method {name!r}: unknown entries {sorted(bad)} "
                              f"(keys, search, seeds, datasets, dataset_keys)")
        outside = set(spec.get("datasets") or []) - set(tree["datasets"])
        if outside:
            raise ConfigError(f"{path}: method {name!r}: datasets not in the grid's `datasets`: {sorted(outside)}")
        stray = set(spec.get("dataset_keys") or {}) - set(spec.get("datasets") or tree["datasets"])
        if stray:
            raise ConfigError(f"{path}: method {name!r}: dataset_keys for datasets it does not run on: {sorted(stray)}")
        methods[str(name)] = spec
    for dataset, per_method in (tree.get("extra_seeds") or {}).items():
        for method, seeds in per_method.items():
            if method not in methods:
                raise ConfigError(f"{path}: `extra_seeds.{dataset}` names method {method!r}, which is not in `methods`")
            own = methods[method].get("seeds") or tree["seeds"]
            again = [s for s in seeds if s in own]
            if again:
                raise ConfigError(f"{path}: `extra_seeds.{dataset}.{method}` lists seed {again[0]}, which is already "
                                  f"among its seeds {own}; each seed is one cell")
    power = _power(path, tree.get("power"), methods, protocols)
    grid = Grid(name=str(tree.get("name") or Path(path).stem), datasets=[str(d) for d in tree["datasets"]],
                protocols=protocols, seeds=[int(s) for s in tree["seeds"]], methods=methods,
                keys=dict(tree.get("keys") or {}), search={k: list(v) for k, v in (tree.get("search") or {}).items()},
                extra_seeds=tree.get("extra_seeds") or {},
                ood_valid_fraction=float(tree.get("ood_valid_fraction", 0.3)), file=Path(path),
                power=power, halving=_halving(path, tree.get("halving"), tree["datasets"], protocols),
                deferred=_deferred(path, tree.get("deferred"), methods, power))
    if protocols[0] in TEST_SELECTED and any(len(grid.candidates(m)) > 1 for m in methods):
        raise ConfigError(f"{path}: the {protocols[0]} protocol selects on the test set: give one candidate per method")
    return grid


def _deferred(path: Path, named: Optional[list[str]], methods: dict[str, Any], power: Optional[Power]) -> list[str]:
    """The `deferred` methods of a grid file, checked: the grid's methods, each once, none of them a method under
    test of `power`, and at least one method left that is not deferred."""
    named = list(named or [])
    for method in named:
        if method not in methods:
            raise ConfigError(f"{path}: `deferred` names method {method!r}, which is not in `methods`")
    repeated = [m for i, m in enumerate(named) if m in named[:i]]
    if repeated:
        raise ConfigError(f"{path}: `deferred` names method {repeated[0]!r} twice")
    tested = [m for m in named if power is not None and m in power.methods]
    if tested:
        raise ConfigError(f"{path}: `deferred` names {tested[0]!r}, a method under test of `power.methods`: its "
                          f"cells decide the answer and cannot wait for the rest")
    if set(methods) <= set(named):
        raise ConfigError(f"{path}: `deferred` names every method; it defers some methods until the others have run")
    return [str(m) for m in named]


def _halving(path: Path, tree: Optional[dict[str, Any]], datasets: list[str], protocols: list[str]) -> Optional[Halving]:
    """The `halving` section of a grid file, checked: datasets of the grid, a rung of at least one epoch, at least
    one candidate kept; only under the validation protocols."""
    if tree is None:
        return None
    unknown = set(tree) - {"datasets", "rung", "keep"}
    if unknown:
        raise ConfigError(f"{path}: `halving`: unknown entries {sorted(unknown)} (datasets, rung, keep)")
    if any(p in TEST_SELECTED for p in protocols):
        raise ConfigError(f"{path}: `halving` needs the valid or ood_valid protocol (it ranks on validation data)")
    named = _expect(path, "halving.datasets", tree.get("datasets"), "strings")
    outside = sorted(set(named) - set(datasets))
    if outside:
        raise ConfigError(f"{path}: `halving.datasets` names datasets not in `datasets`: {outside}")
    for entry in ("rung", "keep"):
        if not is_int(tree.get(entry)) or tree[entry] < 1:
            raise ConfigError(f"{path}: `halving.{entry}` must be a whole number of at least 1, got {tree.get(entry)!r}")
    return Halving(datasets=list(named), rung=int(tree["rung"]), keep=int(tree["keep"]))


def _power(path: Path, tree: Optional[dict[str, Any]], methods: dict[str, Any], protocols: list[str]) -> Optional[Power]:
    """The `power` section of a grid file, checked: seeds (at least two, each once), methods and at_least naming
    the grid's methods, at_least within the seeds; only under the validation protocols."""
    if tree is None:
        return None
    unknown = set(tree) - {"seeds", "methods", "best_other", "at_least"}
    if unknown:
        raise ConfigError(f"{path}: `power`: unknown entries {sorted(unknown)} (seeds, methods, best_other, at_least)")
    if any(p in TEST_SELECTED for p in protocols):
        raise ConfigError(f"{path}: `power` needs the valid or ood_valid protocol (the best other method is chosen "
                          f"on validation data)")
    seeds = _expect(path, "power.seeds", tree.get("seeds"), "ints")
    if len(seeds) < 2:
        raise ConfigError(f"{path}: `power.seeds` must list at least two seeds, got {seeds}")
    _single_seeds(path, "power.seeds", seeds)
    named = _expect(path, "power.methods", tree.get("methods") or [], "strings")
    at_least = _expect(path, "power.at_least", tree.get("at_least") or {}, "mapping")
    for method in list(named) + list(at_least):
        if method not in methods:
            raise ConfigError(f"{path}: `power` names method {method!r}, which is not in `methods`")
    for method, count in at_least.items():
        if not is_int(count) or not 1 <= count <= len(seeds):
            raise ConfigError(f"{path}: `power.at_least.{method}` must be a number of seeds from 1 to "
                              f"{len(seeds)} (len(power.seeds)), got {count!r}")
    best_other = tree.get("best_other", True)
    if not isinstance(best_other, bool):
        raise ConfigError(f"{path}: `power.best_other` must be true or false, got {best_other!r}")
    return Power(seeds=[int(s) for s in seeds], methods=[str(m) for m in named], best_other=best_other,
                 at_least={str(k): int(v) for k, v in at_least.items()})
