"""data/download.py against a local mirror (../shared/datasets) and a local HTTP server: no network needed."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import shutil
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data import download as dl
from data.loader import read_interactions
from data.presets import PRESETS, get_preset

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is not available")
DRGO_COMMIT = "cb213e73b209e16dabc8a9ced98c4f84ce57c9fc"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mirror_copy(tmp_path: Path, name: str, skip: tuple[str, ...] = ()) -> Path:
    """A private mirror holding a copy of ../shared/datasets/<name> (minus some files)."""
    mirror = tmp_path / "mirror"
    (mirror / name).mkdir(parents=True)
    for path in (SHARED / name).iterdir():
        if path.name not in skip:
            shutil.copyfile(path, mirror / name / path.name)
    return mirror


def _no_part_files(folder: Path) -> bool:
    return not list(folder.rglob("*.part"))


def test_checksums_in_code_match_the_published_copies():
    checked = 0
    for name in ("food", "coat", "yahoo", "adressa", "yelp2018"):
        for remote in get_preset(name).sources:
            candidates = [Path(c) for c in dl.candidates(name, remote, str(SHARED))]
            present = [c for c in candidates if c.is_file()]
            assert present, f"{name}: no mirror copy of {remote.local} among {candidates}"
            assert dl.sha256_file(present[0]) == remote.sha256, f"{name}/{remote.local}"
            checked += 1
    assert checked == 4 + 3 + 3 + 2 + len(get_preset("yelp2018").sources)


def test_sources_are_pinned_and_well_formed():
    for preset in PRESETS.values():
        for remote in preset.sources:
            assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256), remote
            assert remote.refs and all(re.fullmatch(r"[0-9a-f]{40}|HEAD", r) for r in remote.refs), remote
            if remote.repo == "user683/DRGO":
                assert remote.refs == (DRGO_COMMIT,), remote
    food_ood = next(r for r in get_preset("food").sources if r.local == "test_ood.txt")
    assert food_ood.urls() == [f"https://raw.githubusercontent.com/user683/DRGO/{DRGO_COMMIT}/"
                               "data_for_SELFRec/food/test.txt"]
    assert {r.local for r in get_preset("yelp2018").sources} == set(get_preset("yelp2018").files())


def test_how_to_get_matches_the_cli():
    for preset in PRESETS.values():
        if not preset.sources:
            continue
        tokens = preset.how_to_get.split()
        assert tokens[:4] == ["python", "-m", "data.download", preset.name], preset.how_to_get
        assert all(t in ("--raw",) for t in tokens[4:] if t.startswith("--")), preset.how_to_get


def test_download_from_mirror_verifies_and_renames_the_ood_file(tmp_path):
    paths = dl.download("food", tmp_path, mirror=str(SHARED))
    folder = tmp_path / "food"
    assert sorted(p.name for p in folder.iterdir()) == ["test_iid.txt", "test_ood.txt", "train.txt", "valid_iid.txt"]
    assert paths == [folder / f for f in ("train.txt", "valid_iid.txt", "test_iid.txt", "test_ood.txt")]
    expected = {r.local: r.sha256 for r in get_preset("food").sources}
    for path in paths:
        assert _sha(path.read_bytes()) == expected[path.name]
    assert _no_part_files(tmp_path)


def test_verified_files_are_kept_and_a_corrupt_one_is_fetched_again(tmp_path, caplog):
    dl.download("coat", tmp_path, mirror=str(SHARED))
    train = tmp_path / "coat" / "train.txt"
    valid = tmp_path / "coat" / "valid.txt"
    before = valid.stat().st_mtime_ns
    train.write_text("0 1\n")  # damaged copy
    with caplog.at_level(logging.INFO, logger="data.download"):
        dl.download("coat", tmp_path, mirror=str(SHARED))
    assert valid.stat().st_mtime_ns == before
    assert "valid.txt: present and verified" in caplog.text
    assert "train.txt: present but its sha256 differs" in caplog.text
    assert train.read_bytes() == (SHARED / "coat" / "train.txt").read_bytes()


def test_checksum_mismatch_deletes_the_partial_file_and_is_an_error(tmp_path):
    mirror = _mirror_copy(tmp_path, "coat")
    bad = mirror / "coat" / "valid.txt"
    bad.write_bytes(bad.read_bytes().replace(b"224", b"225", 1))
    root = tmp_path / "dataset"
    with pytest.raises(dl.ChecksumError, match=r"sha256 [0-9a-f]{64} != expected 00e3d3d1"):
        dl.download("coat", root, mirror=str(mirror))
    assert (root / "coat" / "train.txt").is_file()  # fetched before the bad one, verified
    assert not (root / "coat" / "valid.txt").exists()
    assert _no_part_files(root)


def test_missing_file_is_an_error_naming_every_place_tried(tmp_path):
    mirror = _mirror_copy(tmp_path, "adressa", skip=("test_ood.txt",))
    with pytest.raises(dl.DownloadError) as info:
        dl.download("adressa", tmp_path / "dataset", mirror=str(mirror))
    assert not isinstance(info.value, dl.ChecksumError)
    message = str(info.value)
    assert "test_ood.txt" in message and "not found" in message
    assert str(mirror / "adressa" / "test.txt") in message and str(mirror / "adressa" / "test_ood.txt") in message
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    with pytest.raises(dl.DownloadError, match="yelp2018/train.txt: not found"):
        dl.download("yelp2018", tmp_path / "dataset", mirror=str(empty))


def test_a_partial_file_is_resumed(tmp_path, caplog):
    source = (SHARED / "coat" / "test_ood.txt").read_bytes()
    dest = tmp_path / "coat" / "test_ood.txt"
    dest.parent.mkdir(parents=True)
    dest.with_name("test_ood.txt.part").write_bytes(source[:1000])
    with caplog.at_level(logging.INFO, logger="data.download"):
        dl.download("coat", tmp_path, mirror=str(SHARED))
    assert "test_ood.txt.part: resuming at byte 1000" in caplog.text
    assert dest.read_bytes() == source
    assert _no_part_files(tmp_path)


@pytest.mark.parametrize("partial", [b"garbage " * 100, b"x" * 10_000], ids=["corrupt", "longer-than-source"])
def test_a_bad_partial_file_restarts_cleanly(tmp_path, partial):
    dest = tmp_path / "coat" / "train.txt"
    dest.parent.mkdir(parents=True)
    dest.with_name("train.txt.part").write_bytes(partial)
    dl.download("coat", tmp_path, mirror=str(SHARED))
    assert dest.read_bytes() == (SHARED / "coat" / "train.txt").read_bytes()
    assert _no_part_files(tmp_path)


def test_a_partial_file_of_a_bad_source_is_deleted(tmp_path, caplog):
    mirror = _mirror_copy(tmp_path, "coat")
    good = (mirror / "coat" / "train.txt").read_bytes()
    (mirror / "coat" / "train.txt").write_bytes(good + b"0 1\n")  # the source itself is wrong
    part = tmp_path / "dataset" / "coat" / "train.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(good[:100])
    with pytest.raises(dl.ChecksumError, match="expected e6c6a872"):
        dl.download("coat", tmp_path / "dataset", mirror=str(mirror))
    assert "sha256 mismatch after resuming; restarting from zero" in caplog.text
    assert _no_part_files(tmp_path / "dataset")
    assert not (tmp_path / "dataset" / "coat" / "train.txt").exists()


def test_mirror_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(dl.MIRROR_ENV, str(SHARED))
    dl.download("coat", tmp_path)
    assert (tmp_path / "coat" / "test_ood.txt").is_file()


# ---- over HTTP, with a local server that serves ../shared/datasets --------------------------------
class _Handler(BaseHTTPRequestHandler):
    root: Path = SHARED
    ranges = True
    requests: list = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.root / urllib.parse.unquote(self.path.lstrip("/"))
        self.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data, start = path.read_bytes(), 0
        wanted = self.headers.get("Range")
        if wanted and self.ranges:
            start = int(wanted.split("=")[1].rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    _Handler.ranges, _Handler.requests = True, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_download_maps_the_upstream_name_and_resumes_with_range(tmp_path, server, caplog):
    source = (SHARED / "adressa" / "train.txt").read_bytes()
    part = tmp_path / "adressa" / "train.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(source[:5000])
    with caplog.at_level(logging.INFO, logger="data.download"):
        dl.download("adressa", tmp_path, mirror=server + "/")
    assert (tmp_path / "adressa" / "train.txt").read_bytes() == source
    assert (tmp_path / "adressa" / "test_ood.txt").read_bytes() == (SHARED / "adressa" / "test_ood.txt").read_bytes()
    assert ("/adressa/train.txt", "bytes=5000-") in _Handler.requests
    # the upstream name is asked once (a 404 is not retried), then the local name
    assert [r for r in _Handler.requests if r[0] == "/adressa/test.txt"] == [("/adressa/test.txt", None)]
    assert "resuming at byte 5000" in caplog.text
    assert _no_part_files(tmp_path)


def test_http_server_without_range_support_restarts(tmp_path, server, caplog):
    _Handler.ranges = False
    part = tmp_path / "coat" / "train.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"0 223 231")  # a correct prefix, but the server sends the whole file again
    with caplog.at_level(logging.INFO, logger="data.download"):
        dl.download("coat", tmp_path, mirror=server)
    assert (tmp_path / "coat" / "train.txt").read_bytes() == (SHARED / "coat" / "train.txt").read_bytes()
    assert [r for r in _Handler.requests if r[0] == "/coat/train.txt"] == [("/coat/train.txt", "bytes=9-")]
    assert "resuming" not in caplog.text and "mismatch" not in caplog.text  # overwritten, not appended


def test_http_complete_partial_file_is_verified(tmp_path, server):
    source = (SHARED / "coat" / "valid.txt").read_bytes()
    part = tmp_path / "coat" / "valid.txt.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(source)  # the server answers 416: nothing left to fetch
    dl.download("coat", tmp_path, mirror=server)
    assert (tmp_path / "coat" / "valid.txt").read_bytes() == source


# ---- command line ---------------------------------------------------------------------------------
def test_cli_downloads_and_reports_errors(tmp_path, caplog):
    assert dl.main(["coat", "--root", str(tmp_path), "--mirror", str(SHARED)]) == 0
    assert (tmp_path / "coat" / "valid.txt").is_file()
    assert dl.main(["foood", "--root", str(tmp_path), "--mirror", str(SHARED)]) == 2
    assert "did you mean 'food'" in caplog.text
    caplog.clear()
    assert dl.main(["kuairec", "--root", str(tmp_path), "--mirror", str(tmp_path / "empty")]) == 2
    assert "kuaiRec/test_iid.txt" in caplog.text and "not found" in caplog.text


# ---- members of a published zip archive (IR-Benchmark's proc.zip) ---------------------------------
IR_COMMIT = "18bbbe892301c6013579ae70f3cab9d666878e23"
IR_COUNTS = {  # preset -> (train rows, test rows, users, items): the files as published, checked by hand
    "ir-cd-pop": (288_610, 72_153, 12_784, 13_874),
    "ir-electronic-pop": (187_616, 46_905, 13_455, 8_360),
}
TRAIN = b"user_procid\titem_procid\n0\t1\n0\t2\n1\t0\n2\t2\n"
TEST = b"user_procid\titem_procid\n0\t0\n1\t2\n2\t1\n"


def _zip(path: Path, members: dict[str, bytes]) -> str:
    """Write a zip archive holding members at its root; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for member, data in members.items():
            zipped.writestr(member, data)
    return _sha(path.read_bytes())


def _patch_sources(monkeypatch, name: str, archive_sha256: str, member_sha256: dict[str, str]) -> None:
    """Point preset `name`'s sources at a constructed archive: its sha256 and its members' (others kept)."""
    preset = PRESETS[name]
    sources = tuple(dataclasses.replace(r, archive_sha256=archive_sha256, sha256=member_sha256.get(r.member, r.sha256))
                    for r in preset.sources)
    monkeypatch.setitem(PRESETS, name, dataclasses.replace(preset, sources=sources))


def _constructed(tmp_path: Path, monkeypatch, members: dict[str, bytes] | None = None,
                 name: str = "ir-cd-pop") -> Path:
    """A mirror holding a constructed proc.zip for `name` (default: TRAIN and TEST), with the sources patched."""
    mirror = tmp_path / "mirror"
    members = {"train.tsv": TRAIN, "test.tsv": TEST, "summary.txt": b"made for a test\n"} if members is None \
        else members
    archive_sha = _zip(mirror / name / "proc.zip", members)
    _patch_sources(monkeypatch, name, archive_sha, {"train.tsv": _sha(TRAIN), "test.tsv": _sha(TEST)})
    return mirror


def test_ir_benchmark_presets_are_members_of_the_pinned_proc_zip():
    for name, folder in (("ir-cd-pop", "amazon2014-cd-popularity"),
                         ("ir-electronic-pop", "amazon2014-electronic-popularity")):
        preset = get_preset(name)
        assert (preset.format, preset.train, preset.valid, preset.tests) == \
            ("pairs", "train.tsv", None, {"test_ood": "test.tsv"})
        assert [r.member for r in preset.sources] == [r.local for r in preset.sources] == ["train.tsv", "test.tsv"]
        for remote in preset.sources:
            assert re.fullmatch(r"[0-9a-f]{64}", remote.archive_sha256) and remote.archive_sha256 != remote.sha256
            assert remote.urls() == [f"https://raw.githubusercontent.com/Tiny-Snow/IR-Benchmark-Dataset/{IR_COMMIT}/"
                                     f"data_ood/{folder}/proc.zip"]
            assert dl.candidates(name, remote, str(SHARED)) == [str(SHARED / name / "proc.zip"),
                                                                 str(SHARED / name / remote.member)]
            assert dl.candidates(name, remote, "http://m/") == [f"http://m/{name}/proc.zip",
                                                                f"http://m/{name}/{remote.member}"]
        assert IR_COMMIT in preset.source and f"data_ood/{folder}/proc.zip" in preset.source
    assert get_preset("ir-cd-pop").sources[0].archive_sha256.startswith("dd87e147")
    assert get_preset("ir-electronic-pop").sources[1].sha256.startswith("7b455761")
    assert all(not r.member and not r.archive_sha256 for p in PRESETS.values() if not p.name.startswith("ir-")
               for r in p.sources)


@pytest.mark.skipif(not (SHARED / "ir-cd-pop").is_dir(), reason="no IR-Benchmark copy in ../shared/datasets")
def test_ir_benchmark_presets_download_from_the_unzipped_mirror_and_read_as_pairs(tmp_path):
    assert dl.main(["ir-cd-pop", "ir-electronic-pop", "--root", str(tmp_path), "--mirror", str(SHARED)]) == 0
    for name, (train_rows, test_rows, users, items) in IR_COUNTS.items():
        folder = tmp_path / name
        assert sorted(p.name for p in folder.iterdir()) == ["test.tsv", "train.tsv"]  # no archive, no .part
        for remote in get_preset(name).sources:
            assert dl.sha256_file(folder / remote.local) == remote.sha256
            assert (folder / remote.local).read_bytes() == (SHARED / name / remote.member).read_bytes()
        train = read_interactions(folder / "train.tsv", "pairs")
        test = read_interactions(folder / "test.tsv", "pairs")
        assert (len(train), len(test)) == (train_rows, test_rows)
        assert (train.header, test.header, train.malformed, test.malformed) == (1, 1, 0, 0)
        assert max(map(int, train.users)) + 1 == len(set(train.users)) == users
        assert max(map(int, train.items)) + 1 == len(set(train.items)) == items
        assert set(test.users) <= set(train.users) and set(test.items) <= set(train.items)


def test_a_member_is_extracted_from_the_mirror_zip_and_verified(tmp_path, monkeypatch, caplog):
    mirror = _constructed(tmp_path, monkeypatch)
    (mirror / "ir-cd-pop" / "train.tsv").write_bytes(b"not used: the archive comes first\n")
    root = tmp_path / "dataset"
    with caplog.at_level(logging.INFO, logger="data.download"):
        paths = dl.download("ir-cd-pop", root, mirror=str(mirror))
    folder = root / "ir-cd-pop"
    assert paths == [folder / "train.tsv", folder / "test.tsv"]
    assert (folder / "train.tsv").read_bytes() == TRAIN and (folder / "test.tsv").read_bytes() == TEST
    assert sorted(p.name for p in folder.iterdir()) == ["test.tsv", "train.tsv"]  # the archive was deleted
    assert caplog.text.count("archive fetched from") == 1  # once for both members
    assert "proc.zip: archive deleted" in caplog.text
    assert len(read_interactions(folder / "train.tsv", "pairs")) == 4


def test_the_archive_is_fetched_once_over_http_and_its_partial_download_resumes(tmp_path, monkeypatch, server):
    mirror = _constructed(tmp_path, monkeypatch)
    monkeypatch.setattr(_Handler, "root", mirror)
    data = (mirror / "ir-cd-pop" / "proc.zip").read_bytes()
    part = tmp_path / "dataset" / "ir-cd-pop" / "proc.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:100])
    dl.download("ir-cd-pop", tmp_path / "dataset", mirror=server)
    assert (tmp_path / "dataset" / "ir-cd-pop" / "test.tsv").read_bytes() == TEST
    assert _Handler.requests == [("/ir-cd-pop/proc.zip", "bytes=100-")]  # resumed, then reused for test.tsv
    assert sorted(p.name for p in part.parent.iterdir()) == ["test.tsv", "train.tsv"]


def test_a_verified_archive_left_by_an_interrupted_call_is_used_then_deleted(tmp_path, monkeypatch):
    mirror = _constructed(tmp_path, monkeypatch)
    folder = tmp_path / "dataset" / "ir-cd-pop"
    folder.mkdir(parents=True)
    shutil.copyfile(mirror / "ir-cd-pop" / "proc.zip", folder / "proc.zip")
    dl.download("ir-cd-pop", tmp_path / "dataset", mirror=str(tmp_path / "empty"))  # nothing to fetch
    assert (folder / "train.tsv").read_bytes() == TRAIN
    assert sorted(p.name for p in folder.iterdir()) == ["test.tsv", "train.tsv"]


def test_fetch_of_a_member_alone_cleans_up_its_archive(tmp_path, monkeypatch):
    mirror = _constructed(tmp_path, monkeypatch)
    remote = get_preset("ir-cd-pop").sources[1]
    dest = tmp_path / "out" / "test.tsv"
    dl.fetch(remote, dest, dl.candidates("ir-cd-pop", remote, str(mirror)))
    assert dest.read_bytes() == TEST and sorted(p.name for p in dest.parent.iterdir()) == ["test.tsv"]


def _assert_failed_cleanly(folder: Path, name: str) -> None:
    assert not (folder / name).exists()
    assert not (folder / "proc.zip").exists()
    assert _no_part_files(folder.parent)


def test_an_archive_without_the_member_is_an_error_naming_it(tmp_path, monkeypatch):
    mirror = _constructed(tmp_path, monkeypatch, {"train.tsv": TRAIN, "summary.txt": b"x\n"})
    root = tmp_path / "dataset"
    with pytest.raises(dl.DownloadError) as info:
        dl.download("ir-cd-pop", root, mirror=str(mirror))
    assert not isinstance(info.value, dl.ChecksumError)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("test.tsv (Tiny-Snow/IR-Benchmark-Dataset/data_ood/amazon2014-cd-popularity/"
                               "proc.zip:test.tsv): no source gave")
    assert lines[1].strip() == (f"{mirror / 'ir-cd-pop' / 'proc.zip'}: the archive has no member 'test.tsv' "
                                "(it holds: train.tsv, summary.txt)")
    assert lines[2].strip() == f"{mirror / 'ir-cd-pop' / 'test.tsv'}: not found" and len(lines) == 3
    assert (root / "ir-cd-pop" / "train.tsv").read_bytes() == TRAIN  # extracted before the missing one
    _assert_failed_cleanly(root / "ir-cd-pop", "test.tsv")


def test_a_corrupt_archive_is_an_error_and_leaves_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "ir-cd-pop").mkdir(parents=True)
    (mirror / "ir-cd-pop" / "proc.zip").write_bytes(b"<html>not a zip file</html>\n")
    root = tmp_path / "dataset"
    # with the published checksum: the archive's own sha256 fails first
    with pytest.raises(dl.ChecksumError, match=r"proc.zip: sha256 [0-9a-f]{64} != expected dd87e147"):
        dl.download("ir-cd-pop", root, mirror=str(mirror))
    _assert_failed_cleanly(root / "ir-cd-pop", "train.tsv")
    # with a checksum that matches the corrupt bytes: the zip itself cannot be read
    _patch_sources(monkeypatch, "ir-cd-pop", _sha(b"<html>not a zip file</html>\n"), {})
    with pytest.raises(dl.DownloadError) as info:
        dl.download("ir-cd-pop", root, mirror=str(mirror))
    assert not isinstance(info.value, dl.ChecksumError)
    assert re.search(r"proc\.zip: not a readable zip archive \(File is not a zip file\)$",
                     str(info.value).splitlines()[1])
    _assert_failed_cleanly(root / "ir-cd-pop", "train.tsv")


def test_a_member_with_a_wrong_sha256_is_deleted_and_is_an_error(tmp_path, monkeypatch):
    changed = TRAIN + b"3\t0\n"
    mirror = _constructed(tmp_path, monkeypatch, {"train.tsv": changed, "test.tsv": TEST})
    root = tmp_path / "dataset"
    with pytest.raises(dl.ChecksumError) as info:
        dl.download("ir-cd-pop", root, mirror=str(mirror))
    lines = str(info.value).splitlines()
    assert lines[1].strip() == (f"{mirror / 'ir-cd-pop' / 'proc.zip'}:train.tsv: sha256 {_sha(changed)} "
                                f"!= expected {_sha(TRAIN)} (extracted file deleted)")
    assert lines[2].strip() == f"{mirror / 'ir-cd-pop' / 'train.tsv'}: not found" and len(lines) == 3
    _assert_failed_cleanly(root / "ir-cd-pop", "train.tsv")
    assert not (root / "ir-cd-pop" / "test.tsv").exists()  # never reached


def test_a_bad_archive_falls_back_to_the_unzipped_member(tmp_path, monkeypatch):
    mirror = _constructed(tmp_path, monkeypatch, {"summary.txt": b"x\n"})  # a verified zip without the members
    (mirror / "ir-cd-pop" / "train.tsv").write_bytes(TRAIN)
    (mirror / "ir-cd-pop" / "test.tsv").write_bytes(TEST)
    dl.download("ir-cd-pop", tmp_path / "dataset", mirror=str(mirror))
    folder = tmp_path / "dataset" / "ir-cd-pop"
    assert (folder / "train.tsv").read_bytes() == TRAIN and (folder / "test.tsv").read_bytes() == TEST
    assert sorted(p.name for p in folder.iterdir()) == ["test.tsv", "train.tsv"]
