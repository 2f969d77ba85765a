"""Read a raw interaction log (CSV or whitespace: user, item, [rating], [timestamp]) into integer codes."""
from __future__ import annotations

import csv
import logging
import math
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

log = logging.getLogger(__name__)

AUTO = "auto"
ColumnRef = Union[str, int, None]
# Header names recognised for each column (lower case), in order of preference.
COLUMN_NAMES = {
    "user": ("user_id", "userid", "user", "uid"),
    "item": ("item_id", "itemid", "item", "movieid", "movie_id", "video_id", "videoid", "business_id",
             "song_id", "song", "iid"),
    "rating": ("rating", "ratings", "watch_ratio", "score", "weight", "value"),
    "time": ("timestamp", "unix_timestamp", "ts", "time"),
}


class SplitError(ValueError):
    """A raw log or split setting that cannot give a valid split; the message says why."""


@dataclass(frozen=True)
class LogFormat:
    """How to read a raw log: separator, header, and the columns (header name or 0-based index; None = absent)."""

    sep: Optional[str] = None  # None: ',' if the first line has one, else tab, else any whitespace
    header: Optional[bool] = None  # None: a header is a first line with a known column name (COLUMN_NAMES)
    user: ColumnRef = AUTO
    item: ColumnRef = AUTO
    rating: ColumnRef = AUTO
    time: ColumnRef = AUTO


class Vocab:
    """Raw id tokens <-> integer codes, in order of first appearance (shared by two logs of one split)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []


@dataclass
class Log:
    """The kept rows of one raw log as integer codes."""

    source: str
    users: np.ndarray
    items: np.ndarray
    ratings: Optional[np.ndarray]
    times: Optional[np.ndarray]
    rows_read: int
    rows_below_threshold: int
    user_vocab: Vocab
    item_vocab: Vocab


def read_log(path: Path, fmt: LogFormat = LogFormat(), threshold: Optional[float] = None,
             users: Optional[Vocab] = None, items: Optional[Vocab] = None) -> Log:
    """Read a raw log; rows with rating < threshold are skipped, anything unparsable is an error."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"log not found: {path}")
    users = users if users is not None else Vocab()
    items = items if items is not None else Vocab()
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            first = ""
            while not first.strip():
                first = handle.readline()
                if not first:
                    raise SplitError(f"{path}: the log is empty")
            handle.seek(0)
            sep = fmt.sep if fmt.sep is not None else ("," if "," in first else "\t" if "\t" in first else None)
            rows = _rows(handle, sep, path)
            first_fields = [f.strip() for f in (_first_csv_fields(first, path) if sep == "," else first.split(sep))]
            header = fmt.header if fmt.header is not None else _looks_like_header(first_fields)
            if header:
                next(rows)
            cols = _resolve_columns(path, fmt, first_fields if header else None, len(first_fields))
            if threshold is not None and cols["rating"] is None:
                raise SplitError(f"{path}: a rating threshold needs a rating column, and none was found")
            return _parse(path, rows, cols, threshold, users, items)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _not_utf8(path: Path) -> SplitError:
    """The error for a log that is not UTF-8 text, naming its first undecodable line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return SplitError(f"{path}:{number}: bytes that are not UTF-8 ({exc.reason} at byte {exc.start} of "
                                  f"the line); the log must be UTF-8 text: convert it (e.g. iconv -f latin1 -t "
                                  f"utf-8), or unpack it first if it is compressed or binary")
    return SplitError(f"{path}: bytes that are not UTF-8; the log must be UTF-8 text")


def _first_csv_fields(first: str, path: Path) -> list[str]:
    """The fields of the first line of a CSV log."""
    try:
        return next(csv.reader([first]))
    except csv.Error as exc:
        raise SplitError(f"{path}:1: not a readable CSV line ({exc}); is it a text log?") from None


def _rows(handle, sep: Optional[str], path: Path):
    """Yield (line number, stripped fields) of the non-blank lines."""
    if sep == ",":
        reader = csv.reader(handle)
        try:
            for fields in reader:
                if fields and any(f.strip() for f in fields):
                    yield reader.line_num, [f.strip() for f in fields]
        except csv.Error as exc:
            raise SplitError(f"{path}:{reader.line_num}: not a readable CSV line ({exc}); is it a text log?") from None
        return
    for number, line in enumerate(handle, start=1):
        fields = line.split(sep) if sep else line.split()
        if fields and any(f.strip() for f in fields):
            yield number, [f.strip() for f in fields]


def _looks_like_header(fields: list[str]) -> bool:
    known = {name for names in COLUMN_NAMES.values() for name in names}
    return any(f.lower() in known for f in fields)


def _resolve_columns(path: Path, fmt: LogFormat, header: Optional[list[str]], n_fields: int) -> dict:
    """Map each role to a 0-based column index (or None)."""
    lower = [h.lower() for h in header] if header else None
    cols: dict[str, Optional[int]] = {}
    for role in ("user", "item", "rating", "time"):
        ref = getattr(fmt, role)
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        if ref is None or isinstance(ref, int):
            cols[role] = ref
        elif ref != AUTO:
            if lower is None or ref.lower() not in lower:
                where = f"header {header}" if header else "a log without a header (use a 0-based index)"
                raise SplitError(f"{path}: no {role} column named {ref!r} in {where}")
            cols[role] = lower.index(ref.lower())
        elif lower is not None:
            found = next((lower.index(n) for n in COLUMN_NAMES[role] if n in lower), None)
            if found is None and role in ("user", "item"):
                raise SplitError(f"{path}: header {header} has no {role} column (looked for "
                                 f"{', '.join(COLUMN_NAMES[role])}); name it with --{role}-col")
            cols[role] = found
        else:
            position = {"user": 0, "item": 1, "rating": 2, "time": 3}[role]
            if position >= n_fields and role in ("user", "item"):
                raise SplitError(f"{path}: the first line has {n_fields} field(s); a log needs user and item columns")
            cols[role] = position if position < n_fields else None
    if cols["user"] == cols["item"]:
        raise SplitError(f"{path}: user and item are the same column ({cols['user']})")
    return cols


def _parse(path: Path, rows, cols: dict, threshold: Optional[float], users: Vocab, items: Vocab) -> Log:
    u_col, i_col, r_col, t_col = cols["user"], cols["item"], cols["rating"], cols["time"]
    need = max(c for c in cols.values() if c is not None) + 1
    u_out, i_out, r_out, t_out = array("q"), array("q"), array("d"), array("d")
    read = below = 0
    for number, fields in rows:
        read += 1
        if len(fields) < need:
            used = ", ".join(f"{k}={v}" for k, v in cols.items() if v is not None)
            raise SplitError(f"{path}:{number}: {len(fields)} field(s), but the columns ({used}) need {need} "
                             f"(missing columns?)")
        rating = _number(fields[r_col], path, number, "rating") if r_col is not None else 1.0
        if threshold is not None and rating < threshold:
            below += 1
            continue
        u_out.append(_code(users, fields[u_col], path, number, "user"))
        i_out.append(_code(items, fields[i_col], path, number, "item"))
        r_out.append(rating)
        if t_col is not None:
            t_out.append(_number(fields[t_col], path, number, "timestamp"))
    if read == 0:
        raise SplitError(f"{path}: no data rows")
    if len(u_out) == 0:
        raise SplitError(f"{path}: no row has rating >= {threshold} ({read} rows read)")
    log.info("%s: %d rows read, %d below the rating threshold, %d kept", path.name, read, below, len(u_out))
    return Log(path.name, np.array(u_out, dtype=np.int64), np.array(i_out, dtype=np.int64),
               np.array(r_out) if r_col is not None else None, np.array(t_out) if t_col is not None else None,
               read, below, users, items)


def _number(token: str, path: Path, number: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise SplitError(f"{path}:{number}: {what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise SplitError(f"{path}:{number}: {what} {token!r} is not a finite number")
    return value


def _code(vocab: Vocab, token: str, path: Path, number: int, what: str) -> int:
    code = vocab.index.get(token)
    if code is None:
        if not token or any(ch.isspace() for ch in token):
            raise SplitError(f"{path}:{number}: {what} id {token!r} is empty or contains whitespace")
        if not token.isprintable():
            raise SplitError(f"{path}:{number}: {what} id {token!r} contains control characters (is the log a "
                             f"binary file?)")
        code = vocab.index[token] = len(vocab.names)
        vocab.names.append(token)
    return code
