"""Fetch a preset's published split files at a pinned commit, verify their sha256, put them in dataset/NAME/.

    python -m data.download food                       # from GitHub (raw.githubusercontent.com)
    python -m data.download food coat --root dataset
    python -m data.download food --mirror ../shared/datasets   # a local copy stands in for the network
    python -m data.download kuairec --raw DIR_WITH_KUAIREC_CSVS # KuaiRec: rebuild train from the raw release

A mirror (--mirror or the CNSDIFF_DATA_MIRROR variable; a folder or an http(s) address) holds
<mirror>/<name>/<file>, under the upstream file name (e.g. food/test.txt) or the local one (test_ood.txt).
Downloads go to FILE.part first: an interrupted download resumes (HTTP Range) on the next run, a
checksum mismatch deletes the partial file and is an error, and only a verified file gets its name.

A file published inside a zip archive (RemoteFile.member, e.g. the IR-Benchmark presets' proc.zip) is
taken from the archive: it is fetched once per download call into dataset/NAME/ARCHIVE (through
ARCHIVE.part, resumable like any file), verified by its own sha256, the member is extracted to
MEMBER.part and verified by the member's sha256, then renamed; the archive is deleted when the call
ends. A mirror may hold the archive (<mirror>/<name>/proc.zip, tried first) or the member unzipped
under its own name.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Optional

from data import kuairec, synthetic
from data.presets import PRESETS, RemoteFile, get_preset
from data.stats import format_table
from util.typing_coerce import ConfigError

log = logging.getLogger(__name__)

MIRROR_ENV = "CNSDIFF_DATA_MIRROR"
CHUNK = 1 << 16
TIMEOUT_S = 60
USER_AGENT = "cnsdiff-selfrec-downloader"


class DownloadError(RuntimeError):
    """A file could not be fetched; the message names the file and every source tried."""


class ChecksumError(DownloadError):
    """A fetched file does not have the expected sha256 (the partial file has been deleted)."""


class _NotFound(Exception):
    """The source does not have the file (404 or no such path): try the next source."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def candidates(name: str, remote: RemoteFile, mirror: Optional[str]) -> list[str]:
    """Where to look for one file, in order: the mirror (upstream name, then local name; for a member of an
    archive: the archive, then the member's name, then the local name) or the GitHub refs."""
    if not mirror:
        return remote.urls()
    names = [Path(remote.path).name]
    for extra in ([Path(remote.member).name] if remote.member else []) + [remote.local]:
        if extra not in names:
            names.append(extra)
    if mirror.startswith(("http://", "https://")):
        return [f"{mirror.rstrip('/')}/{name}/{n}" for n in names]
    return [str(Path(mirror) / name / n) for n in names]


def download(name: str, root: Path = Path("dataset"), mirror: Optional[str] = None, attempts: int = 3) -> list[Path]:
    """Fetch and verify every published file of preset `name` into root/name/; returns their paths."""
    preset = get_preset(name)
    if not preset.sources:
        raise DownloadError(f"{preset.name}: nothing to download; {preset.how_to_get}")
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    folder = Path(root) / preset.name
    paths = []
    archives: dict[str, Path] = {}  # archive sha256 -> its verified copy, shared by the members of one call
    try:
        for remote in preset.sources:
            dest = folder / remote.local
            fetch(remote, dest, candidates(preset.name, remote, mirror), attempts, archives)
            paths.append(dest)
    finally:
        _drop_archives(archives)
    log.info("%s: %d file(s) verified in %s", preset.name, len(paths), folder)
    return paths


def fetch(remote: RemoteFile, dest: Path, sources: list[str], attempts: int = 3,
          archives: Optional[dict[str, Path]] = None) -> Path:
    """Put a verified copy of one file at dest, trying the sources in order (an existing good file is kept).

    For a member of an archive, a source named like the archive is the archive (fetched once into `archives`,
    which the caller deletes; without it, fetch deletes its own copy) and any other source the member itself."""
    dest = Path(dest)
    if dest.is_file():
        if sha256_file(dest) == remote.sha256:
            log.info("%s: present and verified", dest)
            return dest
        log.warning("%s: present but its sha256 differs from the published file; fetching it again", dest)
    if remote.member and archives is None:
        own: dict[str, Path] = {}
        try:
            return fetch(remote, dest, sources, attempts, own)
        finally:
            _drop_archives(own)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    problems, mismatch = [], False
    for source in sources:
        try:
            if remote.member and _is_archive(source, remote):
                archive = _archive(remote, source, dest.parent, attempts, archives)
                _extract_verified(archive, remote, source, part)
            else:
                _fetch_verified(source, part, remote.sha256, attempts)
        except _NotFound:
            problems.append(f"{source}: not found")
            continue
        except DownloadError as exc:
            problems.append(str(exc))
            mismatch = mismatch or isinstance(exc, ChecksumError)
            continue
        os.replace(part, dest)
        log.info("%s: fetched from %s, sha256 verified", dest, source)
        return dest
    kind = ChecksumError if mismatch else DownloadError
    raise kind(f"{dest.name} ({remote.upstream()}): no source gave the published file:\n  "
               + "\n  ".join(problems))


def _is_archive(source: str, remote: RemoteFile) -> bool:
    """Whether a source of a member's candidates is the archive (named like it) rather than the member itself."""
    return Path(source).name == Path(remote.path).name


def _archive(remote: RemoteFile, source: str, folder: Path, attempts: int, archives: dict[str, Path]) -> Path:
    """A verified copy of remote's archive: the one this call already has, else fetched from source (resumable)."""
    if remote.archive_sha256 in archives:
        return archives[remote.archive_sha256]
    path = folder / Path(remote.path).name
    if path.is_file() and sha256_file(path) == remote.archive_sha256:  # left by an interrupted call
        log.info("%s: present and verified (archive)", path)
    else:
        part = path.with_name(path.name + ".part")
        _fetch_verified(source, part, remote.archive_sha256, attempts)
        os.replace(part, path)
        log.info("%s: archive fetched from %s, sha256 verified", path, source)
    archives[remote.archive_sha256] = path
    return path


def _extract_verified(archive: Path, remote: RemoteFile, source: str, part: Path) -> None:
    """Write remote.member of the (verified) archive to part and check its sha256; any failure deletes part."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            if remote.member not in zipped.namelist():
                held = ", ".join(zipped.namelist()[:10]) or "nothing"
                raise DownloadError(f"{source}: the archive has no member {remote.member!r} (it holds: {held})")
            with zipped.open(remote.member) as stream, part.open("wb") as out:
                shutil.copyfileobj(stream, out, CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{source}: not a readable zip archive ({exc})") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    actual = sha256_file(part)
    if actual != remote.sha256:
        part.unlink()
        raise ChecksumError(f"{source}:{remote.member}: sha256 {actual} != expected {remote.sha256} "
                            "(extracted file deleted)")


def _drop_archives(archives: dict[str, Path]) -> None:
    """Delete the archives one download call fetched (their members are extracted and verified by now)."""
    for path in archives.values():
        path.unlink(missing_ok=True)
        log.info("%s: archive deleted", path)
    archives.clear()


def _fetch_verified(source: str, part: Path, sha256: str, attempts: int) -> None:
    """Fill part from source (resuming a partial file) and check its sha256; a mismatch deletes part."""
    resumed = _fetch_into(source, part, attempts)
    actual = sha256_file(part)
    if actual == sha256:
        return
    part.unlink()
    if resumed:  # the old partial bytes may have been bad: one clean restart
        log.warning("%s: sha256 mismatch after resuming; restarting from zero", part.name)
        _fetch_into(source, part, attempts)
        actual = sha256_file(part)
        if actual == sha256:
            return
        part.unlink()
    raise ChecksumError(f"{source}: sha256 {actual} != expected {sha256} (partial file deleted)")


def _fetch_into(source: str, part: Path, attempts: int) -> bool:
    """Append the rest of source to part (or write it whole); retries resume; returns True if it resumed."""
    last: Optional[Exception] = None
    for attempt in range(1, attempts + 1):
        offset = part.stat().st_size if part.exists() else 0
        try:
            with _open(source, offset) as (stream, resumed):
                if offset and resumed:
                    log.info("%s: resuming at byte %d", part.name, offset)
                with part.open("ab" if resumed else "wb") as out:
                    shutil.copyfileobj(stream, out, CHUNK)
            return bool(offset and resumed)
        except _NotFound:
            raise
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = exc
            kept = f"; {part.stat().st_size} bytes kept to resume" if part.exists() else ""
            log.warning("%s: attempt %d of %d failed (%s)%s", source, attempt, attempts, exc, kept)
            if attempt < attempts and source.startswith(("http://", "https://")):
                time.sleep(min(2.0 ** attempt, 10.0))
    raise DownloadError(f"{source}: {attempts} attempt(s) failed, last: {last}")


@contextmanager
def _open(source: str, offset: int) -> Iterator[tuple[BinaryIO, bool]]:
    """A byte stream of source from offset if it can resume there (True), else from the start (False)."""
    if source.startswith(("http://", "https://")):
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(source, headers=headers), timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _NotFound(source) from None
            if exc.code == 416 and offset:  # nothing after offset: the partial file may be complete
                yield _Empty(), True
                return
            raise
        with response:
            yield response, offset > 0 and response.status == 206
        return
    path = Path(source)
    if not path.is_file():
        raise _NotFound(source)
    with path.open("rb") as handle:
        start = offset if offset <= path.stat().st_size else 0
        handle.seek(start)
        yield handle, start > 0


class _Empty:
    """A stream with no bytes."""

    def read(self, size: int = -1) -> bytes:
        return b""


def main(argv: Optional[list[str]] = None) -> int:
    """Command line: download (and verify) the named presets."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("names", nargs="+", metavar="NAME",
                        help=f"preset(s): {', '.join(n for n, p in PRESETS.items() if p.sources)}, synthetic")
    parser.add_argument("--root", type=Path, default=Path("dataset"), help="folder holding dataset/<NAME>/")
    parser.add_argument("--mirror", default=None, help=f"local folder or URL standing in for GitHub "
                                                       f"(default: ${MIRROR_ENV})")
    parser.add_argument("--raw", type=Path, default=None,
                        help="kuairec: folder with the raw KuaiRec big_matrix.csv and small_matrix.csv")
    parser.add_argument("--attempts", type=int, default=3, help="tries per source before giving up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        for name in args.names:
            _one(name, args)
    except (DownloadError, ConfigError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    return 0


def _one(name: str, args: argparse.Namespace) -> None:
    """Download one preset (synthetic: generate it; kuairec: rebuild from raw CSVs or fetch the reference tests)."""
    preset = get_preset(name)
    if preset.name == "synthetic":
        synthetic.ensure(args.root / "synthetic")
        return
    if preset.name == "kuairec":
        if args.raw is not None:
            stats = kuairec.build(args.raw, args.root / "kuairec")
            print(format_table(stats))
            return
        download(preset.name, args.root, args.mirror, args.attempts)
        raise DownloadError(kuairec.NOT_PUBLISHED)
    download(preset.name, args.root, args.mirror, args.attempts)


if __name__ == "__main__":
    sys.exit(main())
