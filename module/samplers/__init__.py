"""Negative-sampler registry: negative.sampler in conf/LightGCN.yaml -> class (with its Params), and
check_registration(), which names each step of docs/samplers.md's "Adding a sampler" recipe a sampler misses."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import sys
from pathlib import Path
from typing import Iterable

from conf import params as conf_params
from module.samplers.adar import ADARSampler
from module.samplers.ahns import AHNSSampler
from module.samplers.base import NegativeSampler
from module.samplers.cnsdiff import CNSDiffSampler
from module.samplers.dens import DENSSampler
from module.samplers.dns import DNSSampler
from module.samplers.dns_mn import DNSMNSampler
from module.samplers.mixgcf import MixGCFSampler
from module.samplers.pns import PNSSampler
from module.samplers.rns import RNSSampler
from util.typing_coerce import ConfigError, suggest

SAMPLERS: dict[str, type[NegativeSampler]] = {
    RNSSampler.name: RNSSampler,
    PNSSampler.name: PNSSampler,
    DNSSampler.name: DNSSampler,
    DNSMNSampler.name: DNSMNSampler,
    MixGCFSampler.name: MixGCFSampler,
    DENSSampler.name: DENSSampler,
    AHNSSampler.name: AHNSSampler,
    ADARSampler.name: ADARSampler,
    CNSDiffSampler.name: CNSDiffSampler,
}


def sampler_names() -> list[str]:
    """Registered sampler names."""
    return list(SAMPLERS)


def get_sampler_class(name: str) -> type[NegativeSampler]:
    """Look up a sampler class; an unknown name lists the valid ones."""
    if name not in SAMPLERS:
        raise ConfigError(f"negative.sampler: unknown sampler {name!r}{suggest(name, SAMPLERS)}; "
                          f"valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
TABLE = "## Negative samplers and their settings"  # the heading of docs/samplers.md's sampler table
REGISTRY = "module/samplers/__init__.py"


def check_registration(extra: Iterable[type[NegativeSampler]] = (), docs: Path = DOCS) -> list[str]:
    """The steps of docs/samplers.md's "Adding a sampler" recipe that a sampler misses, one message per missing
    step, each naming the step and the file to edit; [] when every sampler is complete. Checked: every registered
    sampler, every NegativeSampler subclass defined in a module of this package (a new file is found before its
    registry line) and `extra`; `docs` is the folder of samplers.md and configuration.md. Not run on import."""
    rows, problems = _table_rows(docs)
    config_row = next((line for line in (docs / "configuration.md").read_text().splitlines()
                       if line.startswith("| `negative.sampler`")), "")
    if not config_row:
        problems.append("docs/configuration.md: no `negative.sampler` row in its key table")
    named: set[str] = set()
    for cls in _sampler_classes(extra):
        file = _file(cls)
        name = cls.name
        if not name:
            if cls.negatives is not NegativeSampler.negatives:
                problems.append(f"{cls.__name__}: step 3, sampler file: name missing: set name = \"...\" (its "
                                f"negative.sampler value) in {file}")
            continue  # else an abstract helper
        named.add(name)
        problems += [f"{name}: {message}" for message in _missing_steps(cls, name, file, rows, config_row, docs)]
    problems += [f"{name}: step 2, PARAMS entry in conf/params.py names no sampler class (remove it, or fix the "
                 f"sampler's name)" for name in conf_params.PARAMS if name not in named]
    in_params = [name for name in conf_params.PARAMS if name in SAMPLERS]
    in_registry = [name for name in SAMPLERS if name in conf_params.PARAMS]
    if in_params != in_registry:
        problems.append(f"order: step 4, SAMPLERS in {REGISTRY} ({', '.join(in_registry)}) must list the samplers "
                        f"in PARAMS's order in conf/params.py ({', '.join(in_params)})")
    return problems


def _missing_steps(cls: type[NegativeSampler], name: str, file: str, rows: dict[str, str], config_row: str,
                   docs: Path) -> list[str]:
    """The recipe's steps one sampler class misses, in the recipe's order."""
    out = []
    params = cls.Params
    has_params = dataclasses.is_dataclass(params)
    if not has_params:  # step 1; steps 2 and the docs' settings need it
        out.append(f"step 1, Params dataclass missing: add @dataclass class {cls.__name__.removesuffix('Sampler')}"
                   f"Params to conf/params.py and set Params to it in {file}")
    elif getattr(conf_params, params.__name__, None) is not params:
        out.append(f"step 1, Params dataclass {params.__name__} is not in conf/params.py (the settings file users "
                   f"edit): define it there")
    else:
        try:
            params()
        except Exception as exc:  # noqa: BLE001 (any failure is the message)
            out.append(f"step 1, {params.__name__}() fails ({exc}): give every field a valid default in conf/params.py")
    if has_params and conf_params.PARAMS.get(name) is not params:
        if name not in conf_params.PARAMS:
            out.append(f"step 2, PARAMS entry missing: add \"{name}\": {params.__name__} to PARAMS in conf/params.py")
        else:
            out.append(f"step 2, PARAMS[\"{name}\"] in conf/params.py is {conf_params.PARAMS[name].__name__}, not "
                       f"the sampler's Params {params.__name__}")
    if cls.negatives is NegativeSampler.negatives:
        out.append(f"step 3, sampler file: negatives() missing: implement it in {file}")
    if not cls.description:
        out.append(f"step 3, sampler file: description missing: set description (its line in python main.py --list) "
                   f"in {file}")
    for field, value in _hard_coded_defaults(cls):
        out.append(f"step 3, sampler file: description hard-codes the default {value} of {params.__name__}.{field}: "
                   f"write {{{field}}} in {file}")
    if SAMPLERS.get(name) is not cls:
        if name not in SAMPLERS:
            out.append(f"step 4, registry line missing: import {cls.__name__} and add {cls.__name__}.name: "
                       f"{cls.__name__} to SAMPLERS in {REGISTRY}")
        else:
            out.append(f"step 4, SAMPLERS[\"{name}\"] in {REGISTRY} is {SAMPLERS[name].__name__}, not "
                       f"{cls.__name__} (two samplers with one name)")
    if name not in rows:
        out.append(f"step 5, docs row missing: add a row | `{name}` | rule | paper | defaults | run it | to the "
                   f"sampler table of docs/samplers.md")
    elif has_params:
        own = docs / f"{name}.md"
        text = rows[name] + (own.read_text() if own.is_file() else "")
        absent = [f"`{f.name}`" for f in dataclasses.fields(params) if f"`{f.name}`" not in text]
        if absent:
            out.append(f"step 5, docs row incomplete: name {', '.join(absent)} (with the default) in the `{name}` row "
                       f"of docs/samplers.md (or on docs/{name}.md)")
    if config_row and f"`{name}`" not in config_row:
        out.append(f"step 6, configuration row missing: add `{name}` to the negative.sampler row of "
                   f"docs/configuration.md")
    return out


def _file(cls: type) -> str:
    """The file that defines a class, relative to the repository where it lies there."""
    source = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not source:
        return cls.__module__.replace(".", "/") + ".py"
    path = Path(source).resolve()
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)


def _table_rows(docs: Path) -> tuple[dict[str, str], list[str]]:
    """docs/samplers.md's sampler table: name -> its row (and a problem when the table is not found)."""
    page = (docs / "samplers.md").read_text()
    start = page.find(TABLE)
    if start < 0:
        return {}, [f"docs/samplers.md: no section {TABLE!r} (the sampler table)"]
    end = page.find("\n## ", start + 1)
    rows = {}
    for line in page[start:end if end >= 0 else None].splitlines():
        match = re.match(r"^\|\s*`([^`]+)`\s*\|", line)
        if match:
            rows[match.group(1)] = line
    return rows, []


def _sampler_classes(extra: Iterable[type[NegativeSampler]]) -> list[type[NegativeSampler]]:
    """The registered classes, every NegativeSampler subclass defined in a module of this package, then extra."""
    found: list[type[NegativeSampler]] = list(SAMPLERS.values())
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += [obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, NegativeSampler)
                  and obj is not NegativeSampler and obj.__module__ == module.__name__]
    found += list(extra)
    return list(dict.fromkeys(found))


def _hard_coded_defaults(cls: type[NegativeSampler]) -> list[tuple[str, object]]:
    """(field, default) for each number default of Params (other than -1, 0, 1, common in formulas) that the
    description's text (its {field} placeholders left out) writes literally."""
    text = re.sub(r"\{[^{}]*\}", " ", cls.description_template)
    out = []
    for field, value in cls.defaults().items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) in (-1.0, 0.0, 1.0):
            continue
        forms = {str(value), f"{value:g}"} | ({str(int(value))} if float(value).is_integer() else set())
        if any(re.search(rf"(?<![\w.]){re.escape(form)}(?![\w.])", text) for form in forms):
            out.append((field, value))
    return out
