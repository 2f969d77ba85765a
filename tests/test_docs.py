"""The documentation (README.md and docs/*.md): links and anchors resolve, the commands shown run."""
from __future__ import annotations

import functools
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]*$|[<>]")  # DIR, FILE, NAME, <run>


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            code = not code
            continue
        if not code:
            lines.append(line)
    return lines


def _code_blocks(text: str) -> list[list[str]]:
    blocks, current = [], None
    for line in text.splitlines():
        if FENCE.match(line):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def github_anchor(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text lowercased, punctuation other than '-' and '_' removed,
    spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of a page, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(page.read_text()):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_anchor(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(out)


def test_github_anchor_rules():
    assert github_anchor("Every sampler under honest selection (the `main` grid)") == \
        "every-sampler-under-honest-selection-the-main-grid"
    assert github_anchor("Negative samplers and their settings (`conf/params.py`)") == \
        "negative-samplers-and-their-settings-confparamspy"
    assert github_anchor("CNSDiff's settings (the `sensitivity` grid)") == "cnsdiffs-settings-the-sensitivity-grid"
    assert github_anchor("Measured popularity profile: train vs the OOD test") == \
        "measured-popularity-profile-train-vs-the-ood-test"
    assert github_anchor("dns_mn and [a link](x.md)") == "dns_mn-and-a-link"


def test_the_docs_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "configuration.md", "samplers.md", "cnsdiff.md", "adar.md", "fhn.md", "datasets.md",
            "grids.md", "results.md", "speed.md", "reliability.md", "reproducibility.md", "layout.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for line in _prose(page.read_text()):
        line = re.sub(r"`[^`]*`", lambda m: m.group(0) if "](" not in m.group(0) else "", line)
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{target}: no file {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest}")
            elif anchor:
                if dest.suffix != ".md":
                    broken.append(f"{target}: an anchor into a file that is not markdown")
                elif anchor not in anchors(dest):
                    broken.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    assert broken == []


def shown_commands(page: Path) -> list[str]:
    """Every `python ...` line of a page's code blocks (continuation lines joined, comments dropped)."""
    out = []
    for block in _code_blocks(page.read_text()):
        joined, pending = [], ""
        for line in block:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            joined.append(pending + line)
            pending = ""
        for line in joined:
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            if words and words[0] == "python":
                out.append(" ".join(shlex.quote(w) for w in words))
    return out


COMMANDS = sorted({(page.relative_to(REPO).as_posix(), cmd) for page in PAGES for cmd in shown_commands(page)})


@functools.lru_cache(maxsize=None)
def help_text(*args: str) -> tuple[int, str]:
    """`python ARGS --help`, run once per distinct ARGS."""
    done = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_the_readme_shows_commands():
    shown = [cmd for page, cmd in COMMANDS if page == "README.md"]
    assert any(cmd.startswith("python main.py") for cmd in shown)
    assert "python -m pytest -q" in shown


@pytest.mark.parametrize("page,command", COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_every_shown_command_parses(page, command):
    """The module or script exists, `--help` accepts it, and each flag of the line is one its parser accepts."""
    words = shlex.split(command)[1:]
    if words[0] == "-m":
        target, rest = words[:2], words[2:]
        try:
            spec = importlib.util.find_spec(target[1])
        except ModuleNotFoundError:
            spec = None
        assert spec is not None, f"no module {target[1]}"
    else:
        target, rest = words[:1], words[1:]
        assert (REPO / target[0]).is_file(), f"no script {target[0]}"
    rc, text = help_text(*target)
    assert rc == 0, f"{' '.join(target)} --help exited {rc}:\n{text[-2000:]}"
    leading = []  # positional words before the first flag: a subcommand's help names its own flags
    for word in rest:
        if word.startswith("-"):
            break
        leading.append(word)
    unknown = []
    for word in rest:
        if not word.startswith("-") or word == "-" or re.match(r"^-\d", word):
            continue
        flag = word.split("=", 1)[0]
        pattern = re.compile(r"(?<![\w-])" + re.escape(flag) + r"(?![\w-])")
        if pattern.search(text):
            continue
        if leading and not PLACEHOLDER.search(leading[0]):
            sub_rc, sub_text = help_text(*target, leading[0])
            if sub_rc == 0 and pattern.search(sub_text):
                continue
        unknown.append(flag)
    assert unknown == [], f"{' '.join(target)} does not accept {unknown}"


def test_every_shown_config_key_exists():
    """`--set KEY=VALUE` in a shown command names a config key (params.* are checked by the runner itself)."""
    from conf.config import KEYS
    bad = []
    for page, command in COMMANDS:
        words = shlex.split(command)
        for flag, value in zip(words, words[1:]):
            if flag != "--set" or "=" not in value or words[1] != "main.py":
                continue
            key = value.split("=", 1)[0]
            if key not in KEYS and not key.startswith(("params.", "test.set.")):
                bad.append(f"{page}: {key}")
    assert bad == []
