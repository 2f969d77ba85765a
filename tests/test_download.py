"""data/download.py against a local mirror (../shared/datasets) and a local HTTP server: no network needed."""
from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data import download as dl
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
