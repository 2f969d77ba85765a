"""Read interaction files: `user item weight` triples, `user item [weight]` pairs, adjacency lists.

Ids are kept as strings (raw tokens) here; data/interaction.py maps them to integers.
Malformed lines are skipped and counted; a file with no valid line, or one where most lines are
malformed for the configured format, is an error (it suggests the format that fits). Bytes that are
not UTF-8 are an error naming the line. The weight column (triples; optional in pairs) is not used as
a value: every row is one positive, except rows whose weight is not finite or <= min_weight, which
are dropped and counted. A UTF-8 byte-order mark at the start of a file is ignored (logged). A first
line whose user and item fields are not numbers while every other line's are, or that names the
columns (`user_id item_id`, `user item rating`, ...), is a header: skipped and logged, never read as a
user and an item.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from data.rawlog import COLUMN_NAMES

log = logging.getLogger(__name__)

FORMATS = ("triples", "pairs", "adjacency")
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark, as spreadsheet programs write it
_MAX_EXAMPLES = 5


@dataclass
class RawInteractions:
    """Parsed (user, item) rows of one file, with what was skipped."""

    path: Path
    users: list[str]
    items: list[str]
    lines: int = 0
    blank: int = 0
    malformed: int = 0
    malformed_examples: list[int] = field(default_factory=list)  # first few line numbers
    low_weight: int = 0  # rows dropped for a weight that is not finite or <= min_weight
    header: int = 0  # line number of a skipped header line (0: none)

    def __len__(self) -> int:
        return len(self.users)


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file and the problem."""


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _digits(token: str) -> bool:
    """Whether an id token is a plain non-negative integer (ASCII digits only)."""
    return token.isascii() and token.isdigit()


def _fits(tokens: list[str], fmt: str) -> bool:
    """Whether a non-blank line has the shape of the format."""
    if fmt == "adjacency":
        return len(tokens) >= 2
    if fmt == "triples":
        return len(tokens) == 3 and _number(tokens[2]) is not None
    return len(tokens) == 2 or (len(tokens) == 3 and _number(tokens[2]) is not None)


def is_header(first: list[str], rest_numeric: bool, rest_lines: int) -> bool:
    """Whether the first non-blank line of a file is a header: its user and item fields are not integers and
    either they name the columns (`user_id item_id`, rawlog.COLUMN_NAMES) or every other line's are integers."""
    if len(first) < 2 or _digits(first[0]) or _digits(first[1]):
        return False
    named = first[0].lower() in COLUMN_NAMES["user"] and first[1].lower() in COLUMN_NAMES["item"]
    return named or (rest_numeric and rest_lines > 0)


class _HeaderWatch:
    """Follows a file's non-blank lines to tell, at the end, whether the first one is a header."""

    def __init__(self) -> None:
        self.first: Optional[list[str]] = None
        self.first_number = 0
        self.rest_lines = 0
        self.rest_numeric = True

    def see(self, number: int, tokens: list[str]) -> bool:
        """Record a non-blank line; True for the first one."""
        if self.first is None:
            self.first, self.first_number = tokens, number
            return True
        self.rest_lines += 1
        if self.rest_numeric and len(tokens) >= 2 and not (_digits(tokens[0]) and _digits(tokens[1])):
            self.rest_numeric = False
        return False

    def header(self) -> bool:
        """Whether the first non-blank line is a header (see is_header)."""
        return self.first is not None and is_header(self.first, self.rest_numeric, self.rest_lines)


def _strip_bom(raw: bytes, number: int, path: Path) -> bytes:
    """The line without a UTF-8 byte-order mark when it is the file's first line."""
    if number == 1 and raw.startswith(BOM):
        log.info("%s: ignored the UTF-8 byte-order mark at the start of the file", path)
        return raw[len(BOM):]
    return raw


# ---- format detection -----------------------------------------------------------------------------
@dataclass
class _Shape:
    """What a file's lines say about its format (line numbers of the first evidence; 0 = none)."""

    widths: dict[int, int] = field(default_factory=dict)  # columns -> lines
    wide_at: int = 0  # a line of 4+ columns: only adjacency
    fraction_at: int = 0  # three columns, the third a number that is not an integer: a weight
    doubt_at: int = 0  # three columns, the third an integer (`0 5 1`): adjacency or a weight

    def add(self, number: int, tokens: list[str]) -> None:
        """Count one non-blank line."""
        self.widths[len(tokens)] = self.widths.get(len(tokens), 0) + 1
        if len(tokens) >= 4 and not self.wide_at:
            self.wide_at = number
        if len(tokens) == 3:
            third = tokens[2]
            if _number(third) is not None and not third.lstrip("+-").isdigit():
                self.fraction_at = self.fraction_at or number
            else:
                self.doubt_at = self.doubt_at or number

    def merge_first(self, first: "_Shape") -> None:
        """Add the evidence of the first line (scanned apart, since it might have been a header)."""
        for width, count in first.widths.items():
            self.widths[width] = self.widths.get(width, 0) + count
        self.wide_at = first.wide_at or self.wide_at
        self.fraction_at = first.fraction_at or self.fraction_at
        self.doubt_at = first.doubt_at or self.doubt_at


def _shape(path: Path, max_lines: int) -> _Shape:
    """The format evidence of a file's first max_lines lines (a BOM and a header line are left out)."""
    shape, first, watch = _Shape(), _Shape(), _HeaderWatch()
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number > max_lines:
                break
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            tokens = raw.decode("utf-8", "replace").split()
            if not tokens:
                continue
            (first if watch.see(number, tokens) else shape).add(number, tokens)
    if not watch.header():
        shape.merge_first(first)
    return shape


def _kind(path: Path, shape: _Shape) -> tuple[str, str]:
    """('adjacency' | 'weights' | 'two-column', why) of one file, or a DataFileError asking for data.format."""
    if shape.wide_at:
        return "adjacency", f"line {shape.wide_at} has 4 or more columns; triples and pairs have at most 3"
    if set(shape.widths) == {2}:
        return "two-column", "every line has two columns, a user and an item (pairs and adjacency read them alike)"
    if shape.fraction_at and set(shape.widths) <= {2, 3}:
        return "weights", f"line {shape.fraction_at} has a weight that is not an integer in its third column"
    if not shape.widths:
        raise DataFileError(f"{path}: no interaction line (the file is empty or blank)")
    if shape.doubt_at:
        raise DataFileError(f"{path}: data.format is required (triples, pairs or adjacency): lines like `0 5 1` are "
                            f"either user 0 with items 5 and 1 (adjacency) or user 0, item 5, weight 1 (triples) "
                            f"(first at line {shape.doubt_at})")
    widths = ", ".join(str(w) for w in sorted(shape.widths))
    raise DataFileError(f"{path}: data.format is required (triples, pairs or adjacency): its lines have {widths} "
                        f"column(s), which do not show the format without doubt")


def detect_formats(files: dict[str, Path], max_lines: int = 200_000) -> tuple[str, str]:
    """(format, why) that reads every file (e.g. train, valid, tests) as its content says, when each file's
    content leaves no doubt and the files agree; else a DataFileError naming the file and asking for
    data.format. Each file on its own: a line of 4+ columns is only adjacency; two columns on every line read
    the same as pairs or adjacency; three columns whose third is not an integer are a weight. A line like
    `0 5 1` is user 0 with items 5 and 1 (adjacency) or user 0, item 5, weight 1 (triples): no guess, not
    even when another file is clearly adjacency (one data.format applies to all files)."""
    paths = {name: Path(path) for name, path in files.items()}
    shapes = {name: _shape(path, max_lines) for name, path in paths.items()}
    kinds: dict[str, tuple[str, str]] = {}
    doubts: dict[str, DataFileError] = {}
    for name, path in paths.items():
        try:
            kinds[name] = _kind(path, shapes[name])
        except DataFileError as exc:
            doubts[name] = exc
    decided: dict[str, str] = {}  # 'adjacency' / 'weights' -> the first file whose content shows it
    for name, (kind, _) in kinds.items():
        if kind != "two-column":
            decided.setdefault(kind, name)
    if doubts:
        name, exc = next(iter(doubts.items()))
        hints = [f"{paths[n].name} reads as {'adjacency' if k == 'adjacency' else 'triples or pairs'} ({kinds[n][1]})"
                 for k, n in decided.items()]
        hint = f"; {hints[0]}: if every file is in that format, set data.format to it" if len(hints) == 1 else ""
        raise DataFileError(f"{exc}{hint}")
    if len(decided) > 1:
        a, b = decided["adjacency"], decided["weights"]
        raise DataFileError(f"{paths[b]}: data.format is required: this file has a weight column ({kinds[b][1]}) "
                            f"but {paths[a]} is an adjacency list ({kinds[a][1]}); one data.format applies to every "
                            f"file: convert them to one format, or set data.format if one fits both")
    if "adjacency" in decided:
        fmt, name = "adjacency", decided["adjacency"]
    elif "weights" in decided:
        every_three = all(set(shape.widths) == {3} for shape in shapes.values())
        fmt, name = ("triples" if every_three else "pairs"), decided["weights"]
    else:
        fmt, name = "pairs", next(iter(paths))
    why = kinds[name][1]
    return fmt, (why if name == next(iter(paths)) else f"{paths[name].name}: {why}")


# ---- reading ------------------------------------------------------------------------------------------
def read_interactions(path: Path, fmt: str, min_weight: float = 0.0) -> RawInteractions:
    """Parse one data file in the given format ('triples', 'pairs' or 'adjacency')."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataFileError(f"{path}: unknown data.format {fmt!r} (valid: {', '.join(FORMATS)})")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    out = RawInteractions(path, [], [])
    fits = {other: 0 for other in FORMATS}
    watch = _HeaderWatch()
    first_rows = first_malformed = first_low = 0  # what the first non-blank line added
    number = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            raw = _strip_bom(raw, number, path)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFileError(f"{path}, line {number}: bytes that are not UTF-8 ({exc.reason} at byte "
                                    f"{exc.start}); convert the file to UTF-8") from None
            tokens = line.split()
            if not tokens:
                out.blank += 1
                continue
            is_first = watch.see(number, tokens)
            for other in FORMATS:
                fits[other] += _fits(tokens, other)
            if not _fits(tokens, fmt):
                out.malformed += 1
                if len(out.malformed_examples) <= _MAX_EXAMPLES:  # one spare, in case line 1 is a header
                    out.malformed_examples.append(number)
            else:
                _add_line(tokens, fmt, out, min_weight)
            if is_first:
                first_rows, first_malformed, first_low = len(out.users), out.malformed, out.low_weight
    out.lines = number
    if watch.header():
        _drop_header(out, watch, first_rows, first_malformed, first_low)
        for other in FORMATS:
            fits[other] -= _fits(watch.first, other)
    del out.malformed_examples[_MAX_EXAMPLES:]
    filled = out.lines - out.blank - (1 if out.header else 0)
    better = max((f for f in FORMATS if f != fmt), key=lambda f: fits[f])
    hint = (f"; it looks like data.format={better!r} ({fits[better]} of {filled} lines fit)"
            if fits[better] > fits[fmt] else f"; is data.format={fmt!r} right for this file?")
    if not out.users:
        header = f", a header line {out.header}" if out.header else ""
        raise DataFileError(
            f"{path}: no valid interaction line ({out.lines} lines, {out.malformed} malformed, {out.blank} blank, "
            f"{out.low_weight} with weight <= {min_weight:g} or not finite{header}){hint}")
    if out.malformed * 2 > filled:
        raise DataFileError(f"{path}: {out.malformed} of {filled} non-blank lines are malformed for "
                            f"data.format={fmt!r} (first at line(s) {', '.join(map(str, out.malformed_examples))})"
                            f"{hint}")
    if out.malformed:
        log.warning("%s: skipped %d malformed line(s) (first at line(s) %s) for format %s",
                    path, out.malformed, ", ".join(map(str, out.malformed_examples)), fmt)
    if out.low_weight:
        log.warning("%s: dropped %d row(s) whose weight is <= %g or not finite (data.min_weight)",
                    path, out.low_weight, min_weight)
    return out


def _drop_header(out: RawInteractions, watch: _HeaderWatch, rows: int, malformed: int, low: int) -> None:
    """Take back what the header line (the first non-blank line) added to out, and log it."""
    del out.users[:rows], out.items[:rows]
    out.malformed -= malformed
    if malformed:
        out.malformed_examples.remove(watch.first_number)
    out.low_weight -= low
    out.header = watch.first_number
    why = ("it names the columns" if is_header(watch.first, False, 0) else
           "its user and item are not numbers, unlike those of every other line")
    log.warning("%s: skipped line %d `%s` as a header (%s)", out.path, watch.first_number,
                " ".join(watch.first)[:80], why)


def _add_line(tokens: list[str], fmt: str, out: RawInteractions, min_weight: float) -> None:
    """Append a well-formed line's rows to out (a row with a low or non-finite weight is counted, not kept)."""
    if fmt == "adjacency":
        out.users.extend([tokens[0]] * (len(tokens) - 1))
        out.items.extend(tokens[1:])
        return
    if len(tokens) == 3:
        weight = _number(tokens[2])
        if not (math.isfinite(weight) and weight > min_weight):
            out.low_weight += 1
            return
    out.users.append(tokens[0])
    out.items.append(tokens[1])
