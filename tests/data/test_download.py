"""Dataset catalog and downloader, against a local HTTP server (127.0.0.1 only; the internet is blocked here)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import socket
import tarfile
import threading
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from srkit import fs
from srkit.data import download
from srkit.data.catalog import CATALOG, Dataset, DatasetFile, Entry, Group, resolve
from srkit.data.download import (
    DOWNLOADS_DIR,
    MANIFEST_NAME,
    MIRROR_ENV,
    ArchiveError,
    ChecksumError,
    DownloadError,
    UnverifiedDownloadWarning,
    download_dataset,
    extract,
    fetch,
)

# ------------------------------------------------------------------------------------------ the server


@dataclass
class ServerState:
    """What the test server serves and what it saw; tests change it between calls."""

    files: dict[str, bytes] = field(default_factory=dict)  # URL path -> content
    cuts: dict[str, list[int]] = field(default_factory=dict)  # URL path -> per request, bytes sent before hanging up
    corrupt: set[str] = field(default_factory=set)  # URL paths served with flipped bytes
    ignore_range: set[str] = field(default_factory=set)  # URL paths answered 200 + whole file despite Range
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        """How many GETs a path received."""
        return sum(1 for p, _ in self.requests if p == path)


class _Handler(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-` support, and on request a cut connection or corrupted bytes."""

    server: _Server

    def do_GET(self) -> None:
        """Serve a file (206 for ranges, 416 past the end), as told by the server's state."""
        state = self.server.state
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((path, range_header))
            cut = state.cuts[path].pop(0) if state.cuts.get(path) else None
        data = state.files.get(path)
        if data is None:
            self.send_error(404)
            return
        if path in state.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]
        start = 0
        if range_header and path not in state.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            assert match, range_header
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        # A cut sends the full Content-Length header but only part of the body, then hangs up.
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that carries the tests' ServerState."""

    daemon_threads = True
    state: ServerState


@pytest.fixture
def server() -> Iterator[tuple[ServerState, str]]:
    """A running server on 127.0.0.1 (a free port) and its base URL."""
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _offline_and_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the real internet (only loopback resolves), and retries do not sleep."""
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", b"127.0.0.1"):
            raise OSError(f"test tried to reach {host!r}: tests must not touch the internet")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    monkeypatch.setattr(download, "RETRY_DELAY_S", 0.0)
    monkeypatch.delenv(MIRROR_ENV, raising=False)


# ---------------------------------------------------------------------------------------- the fixtures


def _png(color: tuple[int, int, int]) -> bytes:
    """A tiny 8x8 PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _noise(n: int, seed: int) -> bytes:
    """Incompressible bytes, so archives are big enough to cut mid-transfer."""
    return random.Random(seed).randbytes(n)


def _zip(members: dict[str, bytes]) -> bytes:
    """A zip (stored, not deflated: byte offsets stay predictable) of the given members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> bytes:
    """A tar(.gz) of (name, bytes) files and ready-made TarInfo entries (links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return buffer.getvalue()


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    """A tar symlink entry."""
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _sha256(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


PNG_A, PNG_B, PNG_C, PNG_C_LR = _png((255, 0, 0)), _png((0, 255, 0)), _png((0, 0, 255)), _png((9, 9, 9))
ZIP_BYTES = _zip({"Tiny_HR/a.png": PNG_A, "Tiny_HR/b.png": PNG_B, "Tiny_HR/pad.bin": _noise(300_000, 1)})
TGZ_BYTES = _tar([("pack/Tiny/HR/c.png", PNG_C), ("pack/Tiny/LR/c.png", PNG_C_LR), ("pack/Tiny/HR/pad.bin", b"x")])
TXT_BYTES = b"a.png 0\nb.png 1\n"


def _catalog(base: str) -> dict[str, Entry]:
    """A catalog like the real one, pointing at the test server, with checksums of the fixtures."""
    return {
        "tiny-zip": Dataset(
            description="zip part",
            folder="Tiny",
            files=(
                DatasetFile(
                    url=f"{base}/Tiny_HR.zip",
                    filename="Tiny_HR.zip",
                    sha256=_sha256(ZIP_BYTES),
                    size=len(ZIP_BYTES),
                    archive="zip",
                ),
            ),
            license="test",
        ),
        "tiny-tgz": Dataset(
            description="tar.gz part, md5 only, one sub-folder kept",
            folder="Tiny",
            files=(
                DatasetFile(
                    url=f"{base}/pack.tar.gz",
                    filename="pack.tar.gz",
                    sha256=None,
                    md5=hashlib.md5(TGZ_BYTES).hexdigest(),
                    archive="tar.gz",
                    member_prefix="pack/Tiny/HR/",
                    extract_to="HR_from_tar",
                ),
            ),
            license="test",
        ),
        "tiny-txt": Dataset(
            description="plain file without a checksum",
            folder="Tiny",
            files=(
                DatasetFile(
                    url=f"{base}/list.txt", filename="list.txt", sha256=None, note="test file: no published checksum"
                ),
            ),
            license="test",
        ),
        "tiny": Group(description="all of the above", members=("tiny-zip", "tiny-tgz", "tiny-txt")),
    }


@pytest.fixture
def served(server: tuple[ServerState, str]) -> tuple[ServerState, str, dict[str, Entry]]:
    """The server holding the fixtures, its base URL and the matching catalog."""
    state, base = server
    state.files.update({"/Tiny_HR.zip": ZIP_BYTES, "/pack.tar.gz": TGZ_BYTES, "/list.txt": TXT_BYTES})
    return state, base, _catalog(base)


def _leftovers(root: Path) -> list[str]:
    """Temporary or partial files anywhere under root (staging folders, .part files)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".extracting-" in p.name or p.suffix == ".part")


# ------------------------------------------------------------------------------------------- the tests


def test_download_extracts_and_writes_manifest(
    served: tuple[ServerState, str, dict[str, Entry]], tmp_path: Path
) -> None:
    state, base, catalog = served
    with pytest.warns(UnverifiedDownloadWarning, match=r"list\.txt .*cannot be verified"):
        folder = download_dataset("tiny", tmp_path / "data", catalog=catalog, progress=False)

    assert folder == tmp_path / "data" / "Tiny"
    assert sorted(p for p, _ in state.requests) == ["/Tiny_HR.zip", "/list.txt", "/pack.tar.gz"]
    assert (folder / "Tiny_HR" / "a.png").read_bytes() == PNG_A
    assert [p.name for p in fs.list_images([folder / "Tiny_HR"])] == ["a.png", "b.png"]
    # member_prefix keeps only pack/Tiny/HR/, without the prefix, in extract_to.
    assert sorted(p.name for p in (folder / "HR_from_tar").iterdir()) == ["c.png", "pad.bin"]
    assert (folder / "HR_from_tar" / "c.png").read_bytes() == PNG_C
    assert not (folder / "LR").exists() and not (folder / "pack").exists()
    assert (folder / "list.txt").read_bytes() == TXT_BYTES
    # Archives are removed unless keep_archives; nothing temporary is left.
    assert not (tmp_path / "data" / DOWNLOADS_DIR).exists()
    assert _leftovers(tmp_path) == []

    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    entries = manifest["datasets"]
    assert set(entries) == {"tiny-zip", "tiny-tgz", "tiny-txt"}
    zip_record = entries["tiny-zip"]["files"][0]
    assert zip_record["sha256"] == _sha256(ZIP_BYTES) and zip_record["verified"] is True
    assert zip_record["url"] == f"{base}/Tiny_HR.zip" and zip_record["extracted"] == ["Tiny_HR"]
    assert entries["tiny-tgz"]["files"][0]["md5"] == hashlib.md5(TGZ_BYTES).hexdigest()
    txt_record = entries["tiny-txt"]["files"][0]
    assert txt_record["sha256"] == _sha256(TXT_BYTES) and txt_record["verified"] is False
    assert all(e["complete"] and re.match(r"\d{4}-\d\d-\d\dT", e["date"]) for e in entries.values())


def test_second_call_makes_no_request(served: tuple[ServerState, str, dict[str, Entry]], tmp_path: Path) -> None:
    state, _, catalog = served
    with pytest.warns(UnverifiedDownloadWarning):
        first = download_dataset("tiny", tmp_path, catalog=catalog, progress=False)
    seen = len(state.requests)
    manifest = (first / MANIFEST_NAME).read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even the unverified-file warning: nothing is fetched
        second = download_dataset("TINY", tmp_path, catalog=catalog, progress=False)
    assert second == first
    assert len(state.requests) == seen == 3
    assert (first / MANIFEST_NAME).read_text() == manifest


def test_missing_content_is_fetched_again(served: tuple[ServerState, str, dict[str, Entry]], tmp_path: Path) -> None:
    state, _, catalog = served
    folder = download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=False)
    shutil.rmtree(folder / "Tiny_HR")  # the manifest says done, but the content is gone: fetch again
    download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=False)
    assert (folder / "Tiny_HR" / "a.png").read_bytes() == PNG_A
    assert state.count("/Tiny_HR.zip") == 2


def test_group_sharing_one_archive_fetches_it_once(server: tuple[ServerState, str], tmp_path: Path) -> None:
    state, base = server
    content = _tar(
        [
            ("benchmark/SetA/HR/a.png", PNG_A),
            ("benchmark/SetA/LR_bicubic/X4/a.png", PNG_C_LR),
            ("benchmark/SetB/HR/b.png", PNG_B),
        ],
        mode="w",
    )
    state.files["/benchmark.tar"] = content

    def entry(name: str) -> Dataset:
        file = DatasetFile(
            url=f"{base}/benchmark.tar",
            filename="benchmark.tar",
            sha256=None,
            md5=hashlib.md5(content).hexdigest(),
            archive="tar",
            member_prefix=f"benchmark/{name}/HR/",
        )
        return Dataset(description=name, folder=name, files=(file,), license="test")

    catalog: dict[str, Entry] = {"seta": entry("SetA"), "setb": entry("SetB"), "both": Group("both", ("seta", "setb"))}
    assert download_dataset("both", tmp_path, catalog=catalog, progress=False, keep_archives=True) == tmp_path
    assert state.count("/benchmark.tar") == 1
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == ["SetA/a.png", "SetB/b.png"]
    kept = tmp_path / DOWNLOADS_DIR / "benchmark.tar"
    assert kept.read_bytes() == content

    # The kept archive is verified and reused: no request; without keep_archives it goes afterwards.
    shutil.rmtree(tmp_path / "SetB")
    assert download_dataset("setb", tmp_path, catalog=catalog, progress=False) == tmp_path / "SetB"
    assert (tmp_path / "SetB" / "b.png").read_bytes() == PNG_B
    assert state.count("/benchmark.tar") == 1
    assert not kept.exists() and not kept.parent.exists()


def test_interrupted_transfer_resumes_within_one_call(
    served: tuple[ServerState, str, dict[str, Entry]], tmp_path: Path
) -> None:
    state, _, catalog = served
    state.cuts["/Tiny_HR.zip"] = [100_000]  # the first response hangs up after 100 kB
    folder = download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=True, retries=2)

    zip_requests = [r for p, r in state.requests if p == "/Tiny_HR.zip"]
    assert zip_requests == [None, "bytes=100000-"]
    assert (folder / "Tiny_HR" / "b.png").read_bytes() == PNG_B
    assert _leftovers(tmp_path) == []


def test_interrupted_transfer_resumes_in_the_next_call(
    served: tuple[ServerState, str, dict[str, Entry]], tmp_path: Path
) -> None:
    state, base, catalog = served
    state.cuts["/Tiny_HR.zip"] = [40_000, 40_000]  # both attempts of the first call hang up
    with pytest.raises(DownloadError) as info:
        download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=False, retries=1)
    message = str(info.value)
    assert "Tiny_HR.zip" in message and f"{base}/Tiny_HR.zip" in message and "2 attempt" in message
    part = tmp_path / DOWNLOADS_DIR / "Tiny_HR.zip.part"
    assert part.stat().st_size == 80_000 and str(part) in message
    assert not (tmp_path / "Tiny").exists()  # nothing extracted from a partial file

    folder = download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=False, retries=1)
    zip_requests = [r for p, r in state.requests if p == "/Tiny_HR.zip"]
    assert zip_requests == [None, "bytes=40000-", "bytes=80000-"]
    assert (folder / "Tiny_HR" / "a.png").read_bytes() == PNG_A
    assert not part.exists() and _leftovers(tmp_path) == []


def test_corrupt_download_is_rejected_and_removed(
    served: tuple[ServerState, str, dict[str, Entry]], tmp_path: Path
) -> None:
    state, base, catalog = served
    state.corrupt.add("/Tiny_HR.zip")
    with pytest.raises(ChecksumError) as info:
        download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=False)
    err = info.value
    assert err.algorithm == "sha256" and err.expected == _sha256(ZIP_BYTES) and err.actual != err.expected
    message = str(err)
    assert "Tiny_HR.zip" in message and f"{base}/Tiny_HR.zip" in message
    assert err.expected in message and err.actual in message
    assert isinstance(err, ValueError)
    # No part file, no archive, nothing extracted, no manifest.
    assert list(tmp_path.rglob("*")) == []


def test_wrong_size_and_wrong_md5_are_checksum_errors(server: tuple[ServerState, str], tmp_path: Path) -> None:
    state, base = server
    state.files["/f.bin"] = b"0123456789"
    with pytest.raises(ChecksumError, match=r"expected size 11 bytes, got 10 bytes"):
        fetch(f"{base}/f.bin", tmp_path / "f.bin", sha256=None, size=11, progress=False)
    with pytest.raises(ChecksumError, match=r"expected md5 0+, got 781e5e245d69b566979b86e28d23f2c7"):
        fetch(f"{base}/f.bin", tmp_path / "f.bin", sha256=None, md5="0" * 32, size=None, progress=False)
    assert list(tmp_path.iterdir()) == []
    good = fetch(f"{base}/f.bin", tmp_path / "f.bin", sha256=None, md5="781e5e245d69b566979b86e28d23f2c7", size=10)
    assert good.read_bytes() == b"0123456789"


def _bad_crc_zip() -> bytes:
    """A zip whose second member's data was altered after writing: its CRC check fails mid-extraction."""
    data = bytearray(_zip({"Tiny_HR/a.png": PNG_A, "Tiny_HR/z.bin": _noise(50_000, 2)}))
    spot = data.index(b"Tiny_HR/z.bin") + 1000
    data[spot] ^= 0xFF
    return bytes(data)


def _truncated_tgz() -> bytes:
    """A tar.gz cut short inside its last (large) member: early members extract before the error."""
    full = _tar([("Tiny_HR/a.png", PNG_A), ("Tiny_HR/big.bin", _noise(200_000, 3))])
    return full[: len(full) * 3 // 4]


@pytest.mark.parametrize(("filename", "kind", "content"), [
    ("bad.zip", "zip", _bad_crc_zip()),
    ("bad.tar.gz", "tar.gz", _truncated_tgz()),
])  # fmt: skip
def test_corrupt_archive_leaves_nothing_behind(
    server: tuple[ServerState, str], tmp_path: Path, filename: str, kind: Any, content: bytes
) -> None:
    state, base = server
    state.files[f"/{filename}"] = content
    # The checksum is that of the corrupt bytes: the download verifies, the extraction must fail.
    catalog: dict[str, Entry] = {
        "broken": Dataset(
            description="corrupt archive",
            folder="Broken",
            files=(DatasetFile(url=f"{base}/{filename}", filename=filename, sha256=_sha256(content), archive=kind),),
            license="test",
        )
    }
    with pytest.raises(ArchiveError, match=rf"cannot extract .*{re.escape(filename)}: corrupt or truncated"):
        download_dataset("broken", tmp_path, catalog=catalog, progress=False)
    broken = tmp_path / "Broken"
    assert not broken.exists() or list(broken.iterdir()) == []
    assert _leftovers(tmp_path) == []
    assert not list(tmp_path.rglob(MANIFEST_NAME))


@pytest.mark.parametrize(("members", "complaint"), [
    ([("ok.png", PNG_A), ("../evil.txt", b"x")], r"'\.\./evil\.txt' points outside"),
    ([("sub/../../evil.txt", b"x")], r"points outside"),
    ([("/tmp/evil.txt", b"x")], r"'/tmp/evil\.txt' has an absolute path"),
    ([("ok.png", PNG_A), _symlink("link", "../../evil")], r"symlink 'link' -> '\.\./\.\./evil' points outside"),
    ([_symlink("link", "/etc/passwd")], r"symlink 'link' -> '/etc/passwd' is absolute"),
    # A link to "." is harmless alone, but a second link reached through it must not climb out.
    ([_symlink("here", "."), _symlink("here/up", "../evil")], r"symlink 'here/up' -> '\.\./evil' points outside"),
    ([_symlink("out", "."), ("out/x.txt", b"x"), _symlink("sub", "out/..")], r"symlink 'sub' .* points outside"),
])  # fmt: skip
def test_unsafe_members_are_refused(tmp_path: Path, members: list[Any], complaint: str) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(_tar(members))
    target = tmp_path / "area" / "target"
    with pytest.raises(ArchiveError, match=rf"refusing to extract .*evil\.tar\.gz: .*{complaint}"):
        extract(archive, target)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["area", "evil.tar.gz"]


def test_safe_links_inside_the_target_are_kept(tmp_path: Path) -> None:
    archive = tmp_path / "links.tar"
    archive.write_bytes(_tar([("d/a.png", PNG_A), _symlink("d/alias.png", "a.png"), _symlink("e", "d")], mode="w"))
    placed = extract(archive, tmp_path / "out")
    assert placed == [tmp_path / "out" / "d", tmp_path / "out" / "e"]
    assert (tmp_path / "out" / "e" / "alias.png").read_bytes() == PNG_A


def test_zip_traversal_is_refused_through_download(server: tuple[ServerState, str], tmp_path: Path) -> None:
    state, base = server
    content = _zip({"fine/a.png": PNG_A, "../../evil.txt": b"x"})
    state.files["/evil.zip"] = content
    catalog: dict[str, Entry] = {
        "evil": Dataset(
            description="traversal",
            folder="Evil",
            files=(DatasetFile(url=f"{base}/evil.zip", filename="evil.zip", sha256=_sha256(content), archive="zip"),),
            license="test",
        )
    }
    with pytest.raises(ArchiveError, match=r"member '\.\./\.\./evil\.txt' points outside"):
        download_dataset("evil", tmp_path / "data", catalog=catalog, progress=False)
    assert not (tmp_path / "evil.txt").exists()
    assert [p.name for p in tmp_path.rglob("*")] == ["data"]


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'div3k'; known datasets: .*div2k.*set5"):
        download_dataset("div3k", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mirror_replaces_the_catalog_host(
    server: tuple[ServerState, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, base = server
    state.files["/mirror/Tiny_HR.zip"] = ZIP_BYTES
    # The catalog points at a host that does not exist; only the mirror can serve it.
    catalog = _catalog("https://example.invalid/datasets")
    monkeypatch.setenv(MIRROR_ENV, f"{base}/mirror/")
    folder = download_dataset("tiny-zip", tmp_path, catalog=catalog, progress=False)
    assert (folder / "Tiny_HR" / "a.png").read_bytes() == PNG_A
    assert [p for p, _ in state.requests] == ["/mirror/Tiny_HR.zip"]
    record = json.loads((folder / MANIFEST_NAME).read_text())["datasets"]["tiny-zip"]["files"][0]
    assert record["url"] == f"{base}/mirror/Tiny_HR.zip"

    monkeypatch.setenv(MIRROR_ENV, "ftp://mirror.example/")
    with pytest.raises(ValueError, match=rf"{MIRROR_ENV}='ftp://mirror.example/': expected an http"):
        download_dataset("tiny-zip", tmp_path / "other", catalog=catalog, progress=False)


def test_fetch_restarts_when_the_server_ignores_range(server: tuple[ServerState, str], tmp_path: Path) -> None:
    state, base = server
    state.files["/f.bin"] = data = _noise(5000, 4)
    state.ignore_range.add("/f.bin")
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(b"stale bytes of some other file")
    fetch(f"{base}/f.bin", dest, sha256=_sha256(data), size=None, progress=False)
    assert dest.read_bytes() == data
    assert state.requests == [("/f.bin", "bytes=30-")]


def test_fetch_treats_416_as_complete_and_skips_verified_files(server: tuple[ServerState, str], tmp_path: Path) -> None:
    state, base = server
    state.files["/f.bin"] = data = _noise(5000, 5)
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(data)  # complete, but the size is not in the catalog
    fetch(f"{base}/f.bin", dest, sha256=_sha256(data), size=None, progress=True)
    assert dest.read_bytes() == data and not dest.with_suffix(".bin.part").exists()
    assert state.requests == [("/f.bin", "bytes=5000-")]
    fetch(f"{base}/f.bin", dest, sha256=_sha256(data), size=len(data), progress=False)
    assert len(state.requests) == 1  # a verified file at dest is not downloaded again


def test_fetch_http_error_names_the_url(server: tuple[ServerState, str], tmp_path: Path) -> None:
    _, base = server
    with pytest.raises(DownloadError, match=rf"{base}/missing.zip answered HTTP 404 .* for missing\.zip"):
        fetch(f"{base}/missing.zip", tmp_path / "missing.zip", sha256=None, size=None, progress=False)


def test_google_drive_confirmation_page(tmp_path: Path) -> None:
    page = (
        '<html><body><form id="download-form" action="https://drive.usercontent.google.com/download" method="get">'
        '<input type="hidden" name="id" value="FILEID"><input type="hidden" name="export" value="download">'
        '<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="u-1"></form>'
        "</body></html>"
    )
    url = download._gdrive_confirm_url(page, "https://drive.google.com/uc?id=FILEID", None, dest=tmp_path / "x.zip")
    assert url == "https://drive.usercontent.google.com/download?id=FILEID&export=download&confirm=t&uuid=u-1"

    old = '<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC&amp;id=FILEID">Download anyway</a>'
    url = download._gdrive_confirm_url(old, "https://drive.google.com/uc?id=FILEID", None, dest=tmp_path / "x.zip")
    assert url == "https://drive.google.com/uc?export=download&confirm=AbC&id=FILEID"

    quota = '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently.</p>'
    with pytest.raises(DownloadError, match=r"x\.zip \(Too many users .*recently\.\).*save it as .*x\.zip"):
        download._gdrive_confirm_url(quota, "https://drive.google.com/uc?id=FILEID", None, dest=tmp_path / "x.zip")


# ------------------------------------------------------------------------------------------ the catalog


def test_catalog_entries_are_well_formed() -> None:
    required = {"div2k", "div2k-train-hr", "div2k-valid-hr", "div2k-train-lr-x4", "div2k-valid-lr-x4"}
    required |= {"flickr2k", "celeba", "set5", "set14", "bsd100", "urban100"}
    assert required <= set(CATALOG)
    by_filename: dict[str, DatasetFile] = {}
    for name, entry in CATALOG.items():
        assert name == name.lower() and entry.description
        if isinstance(entry, Group):
            assert entry.members and all(isinstance(CATALOG[m], Dataset) for m in entry.members)
            continue
        assert entry.files and entry.license and entry.folder
        for file in entry.files:
            assert urlsplit(file.url).scheme in ("https", "http") and urlsplit(file.url).hostname, file.url
            assert file.filename and "/" not in file.filename
            assert file.archive in ("zip", "tar", "tar.gz", "none")
            assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256), file.filename
            assert file.md5 is None or re.fullmatch(r"[0-9a-f]{32}", file.md5), file.filename
            if file.sha256 is None and file.md5 is None:
                assert file.note, f"{file.filename}: no checksum, so the entry must say why"
            else:
                assert file.checksum_source, f"{file.filename}: say where the checksum was published"
            if file.gdrive_id is not None:
                assert file.url == f"https://drive.google.com/uc?export=download&id={file.gdrive_id}"
            # Downloads are cached by file name: one name must always mean the same file.
            first = by_filename.setdefault(file.filename, file)
            assert (first.url, first.sha256, first.md5, first.size) == (file.url, file.sha256, file.md5, file.size)


def test_groups_expand_in_order() -> None:
    assert [n for n, _ in resolve("div2k")] == [
        "div2k-train-hr",
        "div2k-valid-hr",
        "div2k-train-lr-x4",
        "div2k-valid-lr-x4",
    ]
    assert {d.folder for _, d in resolve("div2k")} == {"DIV2K"}
    assert [d.folder for _, d in resolve("benchmarks")] == ["Set5", "Set14", "BSD100", "Urban100"]
