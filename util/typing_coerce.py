"""Coerce config values (from YAML or the command line) to declared types, with clear errors."""
from __future__ import annotations

import difflib
import math
import re
import typing
from pathlib import Path
from typing import Any, Iterable

TRUE = {"true", "1", "yes", "on", "y"}
FALSE = {"false", "0", "no", "off", "n"}
NONE = {"none", "null", "~", ""}


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


def suggest(name: str, valid: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the nearest valid name, or ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)  # 0.5 matched netflix to synthetic
    return f" (did you mean {close[0]!r}?)" if close else ""


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert value to type tp (bool, int, float, str, Path, list[int], dict[str, Path], Optional[...])."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in NONE):
            return None
        return coerce(key, value, inner[0])
    if tp is bool:
        return _to_bool(key, value)
    if tp is int:
        return _to_int(key, value)
    if tp is float:
        return _to_float(key, value)
    if tp is str:
        if isinstance(value, (dict, list)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        if not isinstance(value, (str, Path)) or str(value).strip() == "":
            raise ConfigError(f"{key}: expected a file path, got {value!r}")
        return Path(str(value))
    if origin is list:
        return [coerce(f"{key}[{n}]", v, args[0]) for n, v in enumerate(_to_list(key, value))]
    if origin is dict:
        return _to_path_map(key, value)
    raise TypeError(f"{key}: unsupported declared type {tp!r}")


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
    raise ConfigError(f"{key}: expected a boolean (true/false/yes/no/1/0), got {value!r}")


def _to_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got boolean {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
    raise ConfigError(f"{key}: expected an integer, got {value!r}")


def _to_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got boolean {value!r}")
    number = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return number


def _to_list(key: str, value: Any) -> list:
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):  # a comma-separated list (spaces inside an item stay: paths may have them)
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = [t.strip() for t in text.split(",") if t.strip()]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    else:
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    if not items:
        raise ConfigError(f"{key}: the list is empty")
    return items


def _to_path_map(key: str, value: Any) -> dict:
    """A mapping name -> path; a single path or a list of paths is named by file stem."""
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (str, Path)) and Path(str(value).strip()).exists():
        pairs = [(Path(str(value).strip()).stem, str(value).strip())]  # an existing path is never split
    else:
        pairs = [(Path(str(v)).stem, v) for v in _to_list(key, value)]
    out: dict[str, Path] = {}
    for name, path in pairs:
        if name in out:
            raise ConfigError(f"{key}: two test files are named {name!r}; use a mapping name: path")
        out[name] = coerce(f"{key}.{name}", path, Path)
    return out
