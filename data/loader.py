"""Read interaction files: `user item weight` triples, `user item [weight]` pairs, adjacency lists.

Ids are kept as strings (raw tokens) here; data/interaction.py maps them to integers.
Malformed lines are skipped and counted; a file with no valid line, or one where most lines are
malformed for the configured format, is an error (it suggests the format that fits). Bytes that are
not UTF-8 are an error naming the line. The weight column (triples; optional in pairs) is not used as
a value: every row is one positive, except rows whose weight is not finite or <= min_weight, which
are dropped and counted.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FORMATS = ("triples", "pairs", "adjacency")


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

    def __len__(self) -> int:
        return len(self.users)


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file and the problem."""


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _fits(tokens: list[str], fmt: str) -> bool:
    """Whether a non-blank line has the shape of the format."""
    if fmt == "adjacency":
        return len(tokens) >= 2
    if fmt == "triples":
        return len(tokens) == 3 and _number(tokens[2]) is not None
    return len(tokens) == 2 or (len(tokens) == 3 and _number(tokens[2]) is not None)


def detect_format(path: Path, max_lines: int = 200_000) -> tuple[str, str]:
    """(format, why) of a data file when its content leaves no doubt, else a DataFileError asking for
    data.format. A line of 4+ columns is only adjacency; a file of two-column lines reads the same as pairs or
    adjacency; three columns whose third is not an integer are a weight (triples). A line like `0 5 1` is
    user 0 with items 5 and 1 (adjacency) or user 0, item 5, weight 1 (triples): no guess."""
    widths: dict[int, int] = {}
    wide_at, fraction_at = 0, 0
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number > max_lines:
                break
            tokens = raw.split()
            if not tokens:
                continue
            widths[len(tokens)] = widths.get(len(tokens), 0) + 1
            if len(tokens) >= 4 and not wide_at:
                wide_at = number
            if len(tokens) == 3 and not fraction_at:
                third = tokens[2].decode("utf-8", "replace")
                if _number(third) is not None and not third.lstrip("+-").isdigit():
                    fraction_at = number
    if wide_at:
        return "adjacency", f"line {wide_at} has 4 or more columns; triples and pairs have at most 3"
    if set(widths) == {2}:
        return "pairs", "every line has two columns, a user and an item (pairs and adjacency read them alike)"
    if fraction_at and set(widths) <= {2, 3}:
        fmt = "triples" if set(widths) == {3} else "pairs"
        return fmt, f"line {fraction_at} has a weight that is not an integer in its third column"
    raise DataFileError(f"{path}: data.format is required (triples, pairs or adjacency): lines like `0 5 1` are "
                        f"either user 0 with items 5 and 1 (adjacency) or user 0, item 5, weight 1 (triples)")


def read_interactions(path: Path, fmt: str, min_weight: float = 0.0) -> RawInteractions:
    """Parse one data file in the given format ('triples', 'pairs' or 'adjacency')."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataFileError(f"{path}: unknown data.format {fmt!r} (valid: {', '.join(FORMATS)})")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    out = RawInteractions(path, [], [])
    fits = {other: 0 for other in FORMATS}
    number = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataFileError(f"{path}, line {number}: bytes that are not UTF-8 ({exc.reason} at byte "
                                    f"{exc.start}); convert the file to UTF-8") from None
            tokens = line.split()
            if not tokens:
                out.blank += 1
                continue
            for other in FORMATS:
                fits[other] += _fits(tokens, other)
            if not _fits(tokens, fmt):
                out.malformed += 1
                if len(out.malformed_examples) < 5:
                    out.malformed_examples.append(number)
                continue
            _add_line(tokens, fmt, out, min_weight)
    out.lines = number
    filled = out.lines - out.blank
    better = max((f for f in FORMATS if f != fmt), key=lambda f: fits[f])
    hint = (f"; it looks like data.format={better!r} ({fits[better]} of {filled} lines fit)"
            if fits[better] > fits[fmt] else f"; is data.format={fmt!r} right for this file?")
    if not out.users:
        raise DataFileError(
            f"{path}: no valid interaction line ({out.lines} lines, {out.malformed} malformed, {out.blank} blank, "
            f"{out.low_weight} with weight <= {min_weight:g} or not finite){hint}")
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
