"""Read interaction files: `user item weight` triples, `user item [weight]` pairs, adjacency lists.

Ids are kept as strings (raw tokens) here; data/interaction.py maps them to integers.
Malformed lines are skipped and counted; a file with no valid line is an error.
"""
from __future__ import annotations

import logging
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

    def __len__(self) -> int:
        return len(self.users)


class DataFileError(ValueError):
    """A data file that cannot be used; the message names the file and the problem."""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_interactions(path: Path, fmt: str) -> RawInteractions:
    """Parse one data file in the given format ('triples', 'pairs' or 'adjacency')."""
    path = Path(path)
    if fmt not in FORMATS:
        raise DataFileError(f"{path}: unknown data.format {fmt!r} (valid: {', '.join(FORMATS)})")
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    out = RawInteractions(path, [], [])
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            out.lines = number
            tokens = line.split()
            if not tokens:
                out.blank += 1
                continue
            if not _parse_line(tokens, fmt, out):
                out.malformed += 1
                if len(out.malformed_examples) < 5:
                    out.malformed_examples.append(number)
    if not out.users:
        raise DataFileError(
            f"{path}: no valid interaction line ({out.lines} lines, {out.malformed} malformed, {out.blank} blank); "
            f"is data.format={fmt!r} right for this file?")
    if out.malformed:
        log.warning("%s: skipped %d malformed line(s) (first at line(s) %s) for format %s",
                    path, out.malformed, ", ".join(map(str, out.malformed_examples)), fmt)
    return out


def _parse_line(tokens: list[str], fmt: str, out: RawInteractions) -> bool:
    """Append the line's rows to out; return False if the line is malformed."""
    if fmt == "adjacency":
        if len(tokens) < 2:
            return False
        user = tokens[0]
        out.users.extend([user] * (len(tokens) - 1))
        out.items.extend(tokens[1:])
        return True
    if fmt == "triples":
        if len(tokens) != 3 or not _is_number(tokens[2]):
            return False
    elif len(tokens) not in (2, 3) or (len(tokens) == 3 and not _is_number(tokens[2])):
        return False
    out.users.append(tokens[0])
    out.items.append(tokens[1])
    return True
