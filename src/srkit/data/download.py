"""`srkit data download`: resumable, verified downloads of the catalog's datasets, unpacked safely.

Layout: `download_dataset(name, to)` puts a dataset in `<to>/<Dataset.folder>` (e.g. `<to>/DIV2K`), writes
`srkit_manifest.json` there, and keeps archives in `<to>/.srkit_downloads` only while it needs them (or for good
with keep_archives=True). Interrupted transfers stay there as `<file>.part` and resume on the next call.

Mirrors: with SRKIT_DOWNLOAD_MIRROR=https://host/some/path (or `mirror=`), every file is fetched from
`<mirror>/<filename>` instead of its catalog URL, so a mirror is one flat folder holding the catalog's file
names (`python -m http.server` in such a folder is enough). Checksums are still those of the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

from srkit import __version__
from srkit.data.catalog import ArchiveType, Dataset, DatasetFile, Entry, resolve

MIRROR_ENV = "SRKIT_DOWNLOAD_MIRROR"
MANIFEST_NAME = "srkit_manifest.json"
DOWNLOADS_DIR = ".srkit_downloads"
USER_AGENT = f"srkit/{__version__} (python-urllib)"
CHUNK_BYTES = 1 << 20
RETRY_DELAY_S = 2.0  # first back-off between attempts, doubled each time; tests set it to 0

# Hosts whose big files answer with a "cannot scan for viruses" HTML page before the file itself.
_GDRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
# Errors after which the same request may well succeed: resume and try again.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class DownloadError(OSError):
    """A transfer failed for good (an HTTP error, or retries used up); the message names the URL and file."""


class ChecksumError(ValueError):
    """A downloaded file does not match its published checksum or size; the bad file has been deleted."""

    def __init__(self, path: Path, url: str, algorithm: str, expected: str, actual: str) -> None:
        super().__init__(path, url, algorithm, expected, actual)
        self.path = path
        self.url = url
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual

    def __str__(self) -> str:
        return (
            f"{self.path.name} downloaded from {self.url} is corrupt: expected {self.algorithm} {self.expected}, "
            f"got {self.actual}; the bad download was deleted, run the command again to fetch it anew"
        )


class ArchiveError(ValueError):
    """An archive is corrupt, truncated or unsafe (a member would land outside the target); nothing was kept."""


class UnverifiedDownloadWarning(UserWarning):
    """A file has no published checksum, so only its size (if known) could be checked."""


@dataclass(frozen=True)
class _Fetched:
    """A file in place plus its digests (sha256 always, md5 when one was expected) and whether they were checked."""

    path: Path
    digests: dict[str, str]
    verified: bool


# ----------------------------------------------------------------------------------------------- fetch


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    md5: str | None = None,
    size: int | None,
    progress: bool = True,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming and retrying, then verify size and checksum."""
    return _fetch(
        url, Path(dest), sha256=sha256, md5=md5, size=size, progress=progress, timeout=timeout, retries=retries
    ).path


def _fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    md5: str | None,
    size: int | None,
    progress: bool,
    timeout: float,
    retries: int,
) -> _Fetched:
    """fetch() that also returns the digests it computed (the manifest records them)."""
    if dest.is_file():
        try:
            digests = _verify(dest, url, sha256=sha256, md5=md5, size=size)
        except ChecksumError as err:
            # Our own downloads only land at dest verified, so this is a stale or hand-placed wrong file.
            warnings.warn(f"{dest} does not match the catalog ({err}); downloading it again", stacklevel=3)
            dest.unlink()
        else:
            return _Fetched(dest, digests, sha256 is not None or md5 is not None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    attempts = retries + 1
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, dest=dest, size=size, timeout=timeout, progress=progress)
            break
        except _TRANSIENT_ERRORS as err:
            have = part.stat().st_size if part.exists() else 0
            if attempt == attempts:
                kept = f"{have} bytes are kept in {part}: run the command again to resume" if have else "no data"
                raise DownloadError(
                    f"downloading {dest.name} from {url} failed after {attempts} attempt(s): {_reason(err)}; {kept}"
                ) from err
            delay = RETRY_DELAY_S * 2 ** (attempt - 1)
            again = f"resuming from byte {have}" if have else "trying again"
            _say(f"{dest.name}: {_reason(err)}; {again} in {delay:g}s", progress)
            time.sleep(delay)
    try:
        digests = _verify(part, url, sha256=sha256, md5=md5, size=size, name=dest.name)
    except ChecksumError:
        part.unlink(missing_ok=True)  # a corrupt prefix would poison every later resume
        raise
    os.replace(part, dest)
    return _Fetched(dest, digests, sha256 is not None or md5 is not None)


def _reason(err: BaseException) -> str:
    """A short text for a network error (URLError hides the useful part in .reason)."""
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _transfer(url: str, part: Path, *, dest: Path, size: int | None, timeout: float, progress: bool) -> None:
    """Append the rest of the file to `part` (Range request when it has bytes); raise on short reads."""
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()  # longer than the published size: not a prefix of the right file
        start = 0
    if size is not None and start == size and start > 0:
        return  # nothing left to fetch; the caller verifies
    response = _open(url, start, timeout=timeout, dest=dest)
    if response is None:
        return  # 416: the server has no bytes after `start`, so the part is complete; the caller verifies
    with response:
        status = response.status
        if start and status == 200:
            start = 0  # the server ignored the Range header and sends the whole file: restart from zero
        elif start and status == 206:
            first = _content_range_start(response.headers.get("Content-Range"))
            if first != start:
                part.unlink()
                raise ConnectionError(f"server sent bytes from {first} when asked for {start}; restarting")
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        total = size if size is not None else (start + length if length is not None else None)
        received = 0
        with open(part, "ab" if start else "wb") as f, _progress_bar(dest.name, total, start, progress) as update:
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
                received += len(chunk)
                update(len(chunk))
        if length is not None and received < length:
            # http.client returns b"" (no error) when the peer closes early, so count the bytes ourselves.
            raise ConnectionError(f"connection closed after {received} of {length} bytes")


def _content_range_start(value: str | None) -> int | None:
    """The first byte position of a `Content-Range: bytes a-b/n` header, or None."""
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _open(url: str, start: int, *, timeout: float, dest: Path) -> http.client.HTTPResponse | None:
    """GET `url` from byte `start`, past Google Drive's confirmation page; None when the server answers 416."""
    cookies = urllib.request.HTTPCookieProcessor()
    opener = urllib.request.build_opener(cookies)
    for _hop in range(3):
        headers = {"User-Agent": USER_AGENT}
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            response: http.client.HTTPResponse = opener.open(
                urllib.request.Request(url, headers=headers), timeout=timeout
            )
        except urllib.error.HTTPError as err:
            err.close()
            if err.code == 416 and start:
                return None
            if err.code in (408, 429) or err.code >= 500:
                raise  # the server may recover: retried
            raise DownloadError(f"{url} answered HTTP {err.code} {err.reason} for {dest.name}") from err
        final_url = response.geturl()
        if urllib.parse.urlsplit(final_url).hostname in _GDRIVE_HOSTS and _is_html(response):
            page = response.read(2 << 20).decode("utf-8", errors="replace")
            response.close()
            url = _gdrive_confirm_url(page, final_url, _gdrive_cookie_token(cookies), dest=dest)
            continue
        return response
    raise DownloadError(f"Google Drive kept answering with a web page instead of {dest.name} (last URL {url})")


def _is_html(response: http.client.HTTPResponse) -> bool:
    """True when the server answered with a web page."""
    return response.headers.get_content_type() == "text/html"


class _DriveFormParser(HTMLParser):
    """Collects Drive's download form (action + hidden inputs), its confirm link and its error text."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.confirm_href: str | None = None
        self.error = ""
        self._in_form = False
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Note the download form, its inputs, and a /uc?...confirm= link."""
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("id") == "download-form":
            self.action, self._in_form = a.get("action") or None, True
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "a" and "confirm=" in a.get("href", "") and "export=download" in a.get("href", ""):
            self.confirm_href = a["href"]
        elif "uc-error-subcaption" in a.get("class", "").split():
            self._in_error = True

    def handle_endtag(self, tag: str) -> None:
        """Leave the form or the error paragraph."""
        if tag == "form":
            self._in_form = False
        self._in_error = False

    def handle_data(self, data: str) -> None:
        """Keep Drive's error text (e.g. the download quota message)."""
        if self._in_error:
            self.error += data


def _gdrive_cookie_token(cookies: urllib.request.HTTPCookieProcessor) -> str | None:
    """The older Drive flow's confirmation token, set as a download_warning* cookie."""
    for cookie in cookies.cookiejar:
        if cookie.name.startswith("download_warning"):
            return cookie.value
    return None


def _gdrive_confirm_url(page: str, page_url: str, cookie_token: str | None, *, dest: Path) -> str:
    """The URL behind Drive's 'cannot scan this file for viruses' page, or DownloadError saying why there is none."""
    parser = _DriveFormParser()
    parser.feed(page)
    if parser.action:
        query = urllib.parse.urlencode(parser.fields)
        return parser.action + ("&" if "?" in parser.action else "?") + query
    if parser.confirm_href:
        return urllib.parse.urljoin(page_url, parser.confirm_href)
    if cookie_token:
        return page_url + ("&" if "?" in page_url else "?") + "confirm=" + urllib.parse.quote(cookie_token)
    reason = " ".join(parser.error.split()) or "no download link on the page Google Drive returned"
    raise DownloadError(
        f"Google Drive did not serve {dest.name} ({reason}). Drive limits downloads of popular files for a while: "
        f"try again later, or download it in a browser from {page_url}, save it as {dest} and run the command "
        "again (a file already there is verified and used)"
    )


@contextlib.contextmanager
def _progress_bar(name: str, total: int | None, initial: int, enabled: bool) -> Iterator[Callable[[int], object]]:
    """A tqdm byte counter (a no-op when disabled), starting at `initial` for resumed transfers."""
    if not enabled:
        yield lambda _n: None
        return
    from tqdm import tqdm

    with tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name) as bar:
        yield bar.update


# ---------------------------------------------------------------------------------------------- verify


def file_digests(path: Path, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file for each hashlib algorithm name, read once in 1 MiB chunks."""
    hashers = {a: hashlib.new(a, usedforsecurity=False) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _verify(
    path: Path, url: str, *, sha256: str | None, md5: str | None, size: int | None, name: str | None = None
) -> dict[str, str]:
    """Check size and checksums (ChecksumError on mismatch); warn when nothing can be checked; return digests."""
    shown = path.with_name(name) if name else path
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise ChecksumError(shown, url, "size", f"{size} bytes", f"{actual_size} bytes")
    digests = file_digests(path, ("sha256", "md5") if md5 else ("sha256",))
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and digests[algorithm] != expected.lower():
            raise ChecksumError(shown, url, algorithm, expected.lower(), digests[algorithm])
    if sha256 is None and md5 is None:
        warnings.warn(
            f"{shown.name} from {url} has no published checksum and cannot be verified; its sha256 is "
            f"{digests['sha256']} (recorded in {MANIFEST_NAME})",
            UnverifiedDownloadWarning,
            stacklevel=4,
        )
    return digests


# --------------------------------------------------------------------------------------------- extract


def extract(archive: Path, into: Path, *, kind: ArchiveType | None = None, member_prefix: str = "") -> list[Path]:
    """Unpack a zip/tar/tar.gz into `into` via a temporary sibling folder; return the top-level paths placed."""
    archive, into = Path(archive).absolute(), Path(into).absolute()
    kind = kind or _archive_kind(archive)
    prefix = _clean_parts(member_prefix, archive) if member_prefix else ()
    into.parent.mkdir(parents=True, exist_ok=True)
    # A sibling of `into` (same filesystem, so the final moves are renames), hidden from list_images.
    staging = Path(tempfile.mkdtemp(prefix=f".{into.name}.extracting-", dir=into.parent))
    try:
        try:
            count = (
                _extract_zip(archive, staging, prefix)
                if kind == "zip"
                else _extract_tar(archive, staging, prefix, kind)
            )
        except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, UnicodeError) as err:
            raise ArchiveError(
                f"cannot extract {archive}: corrupt or truncated {kind} archive ({type(err).__name__}: {err}); "
                f"nothing was extracted into {into}"
            ) from err
        if count == 0:
            where = f" under {member_prefix!r}" if member_prefix else ""
            raise ArchiveError(f"{archive} has no files{where}; expected the dataset's content there")
        into.mkdir(parents=True, exist_ok=True)
        placed = []
        for child in sorted(staging.iterdir()):
            _merge_move(child, into / child.name)
            placed.append(into / child.name)
        return placed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _archive_kind(archive: Path) -> ArchiveType:
    """zip / tar / tar.gz from the file name; ValueError naming the file otherwise."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".tar"):
        return "tar"
    raise ValueError(f"cannot tell the archive type of {archive}: expected .zip, .tar, .tar.gz or .tgz")


def _clean_parts(name: str, archive: Path) -> tuple[str, ...]:
    """An archive member name as path parts; ArchiveError for absolute paths and `..` (they could escape)."""
    posix = name.replace("\\", "/")  # Windows-made zips use backslashes; treat them as separators when checking
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise ArchiveError(f"refusing to extract {archive}: member {name!r} has an absolute path")
    parts = tuple(p for p in posix.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"refusing to extract {archive}: member {name!r} points outside the target folder (..)")
    return parts


def _target(root: Path, parts: tuple[str, ...], prefix: tuple[str, ...], name: str, archive: Path) -> Path | None:
    """Where a member goes under `root` (None when outside `prefix`); refuses paths that resolve outside root."""
    if parts[: len(prefix)] != prefix or len(parts) == len(prefix):
        return None
    target = root.joinpath(*parts[len(prefix) :])
    # Resolve the parent on disk: an earlier symlink member must not redirect later members outside root.
    real_parent = Path(os.path.realpath(target.parent))
    if not _inside(real_parent, root):
        raise ArchiveError(f"refusing to extract {archive}: member {name!r} would be written outside the target")
    if target.is_symlink():
        raise ArchiveError(f"refusing to extract {archive}: member {name!r} would overwrite a symlink")
    return target


def _inside(path: Path, root: Path) -> bool:
    """True when `path` (already resolved) is `root` or below it."""
    real_root = os.path.realpath(root)
    return str(path) == real_root or str(path).startswith(real_root + os.sep)


def _check_link(root: Path, target: Path, link: str, name: str, archive: Path) -> None:
    """Refuse a symlink whose destination is absolute or resolves outside root."""
    if os.path.isabs(link) or link.replace("\\", "/").startswith("/"):
        raise ArchiveError(f"refusing to extract {archive}: symlink {name!r} -> {link!r} is absolute")
    resolved = Path(os.path.realpath(os.path.join(os.path.realpath(target.parent), link)))
    if not _inside(resolved, root):
        raise ArchiveError(f"refusing to extract {archive}: symlink {name!r} -> {link!r} points outside the target")


def _write_member(source: IO[bytes], target: Path) -> None:
    """Copy one member's bytes to a new file (its folders created)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)


def _extract_zip(archive: Path, root: Path, prefix: tuple[str, ...]) -> int:
    """Extract the members under `prefix` (prefix removed); return how many files were written."""
    count = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = _clean_parts(info.filename, archive)
            if not parts:
                continue
            target = _target(root, parts, prefix, info.filename, archive)
            if target is None:
                continue
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif (mode & 0o170000) == 0o120000:  # a Unix symlink stored in the zip: its data is the link text
                link = zf.read(info).decode("utf-8")
                _check_link(root, target, link, info.filename, archive)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(link, target)
            else:
                with zf.open(info) as source:  # reading checks the CRC: BadZipFile on corrupt data
                    _write_member(source, target)
                count += 1
    return count


def _extract_tar(archive: Path, root: Path, prefix: tuple[str, ...], kind: ArchiveType) -> int:
    """Extract regular files, folders and safe links under `prefix`; refuse devices and escaping links."""
    count = 0
    with tarfile.open(archive, "r:gz" if kind == "tar.gz" else "r:") as tf:
        for member in tf:  # streamed: one pass, no seeking back through a compressed stream
            parts = _clean_parts(member.name, archive)
            if not parts:
                continue
            target = _target(root, parts, prefix, member.name, archive)
            if target is None:
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = tf.extractfile(member)
                assert source is not None  # regular members always have data
                with source:
                    _write_member(source, target)
                count += 1
            elif member.issym():
                _check_link(root, target, member.linkname, member.name, archive)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, target)
            elif member.islnk():
                # A hard link names an earlier member; copy that file (a real link could alias files outside).
                link_parts = _clean_parts(member.linkname, archive)
                source_path = _target(root, link_parts, prefix, member.linkname, archive)
                if source_path is None or not source_path.is_file() or source_path.is_symlink():
                    raise ArchiveError(
                        f"cannot extract {archive}: hard link {member.name!r} -> {member.linkname!r} names no "
                        "extracted regular file"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source_path, target)
                count += 1
            else:
                raise ArchiveError(f"refusing to extract {archive}: member {member.name!r} is a device or fifo")
    return count


def _merge_move(source: Path, dest: Path) -> None:
    """Move `source` to `dest`, merging folders (DIV2K's parts share DIV2K/) and replacing files."""
    if source.is_dir() and not source.is_symlink() and dest.is_dir() and not dest.is_symlink():
        for child in sorted(source.iterdir()):
            _merge_move(child, dest / child.name)
        return
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    os.replace(source, dest)


# ------------------------------------------------------------------------------------------- datasets


def download_dataset(
    name: str,
    to: Path,
    *,
    keep_archives: bool = False,
    progress: bool = True,
    catalog: Mapping[str, Entry] | None = None,
    mirror: str | None = None,
    timeout: float = 60,
    retries: int = 3,
) -> Path:
    """Fetch, verify and unpack a catalog entry (or group) under `to`; return its folder. Idempotent."""
    entries = resolve(name, catalog)
    to = Path(to).expanduser().absolute()
    mirror = _check_mirror(mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None)
    cache = to / DOWNLOADS_DIR
    fetched: dict[str, _Fetched] = {}  # by file name: one archive can serve several entries (benchmark.tar)
    # Each archive is deleted as soon as no later entry of this call needs it, to keep peak disk use low.
    uses = Counter(f.filename for _, d in entries for f in d.files if f.archive != "none")
    try:
        for entry_name, dataset in entries:
            _download_entry(entry_name, dataset, to, cache, fetched, mirror, progress, timeout, retries)
            for file in dataset.files:
                uses[file.filename] -= 1
                if uses[file.filename] <= 0 and file.filename in fetched and not keep_archives:
                    fetched.pop(file.filename).path.unlink(missing_ok=True)
    finally:
        if not keep_archives:
            for item in fetched.values():
                item.path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            cache.rmdir()  # only when empty: partial downloads stay for the next call to resume
    folders = {dataset.folder for _, dataset in entries}
    return to / folders.pop() if len(folders) == 1 else to


def _download_entry(
    entry_name: str,
    dataset: Dataset,
    to: Path,
    cache: Path,
    fetched: dict[str, _Fetched],
    mirror: str | None,
    progress: bool,
    timeout: float,
    retries: int,
) -> None:
    """Bring one entry's files into `<to>/<folder>`, skipping those the manifest says are in place."""
    folder = to / dataset.folder
    previous = _manifest_entry(folder, entry_name)
    done = {r.get("filename"): r for r in previous.get("files", []) if isinstance(r, dict)}
    records: list[dict[str, Any]] = []
    for file in dataset.files:
        record = done.get(file.filename)
        if record is not None and _in_place(record, file, folder):
            records.append(record)
            continue
        url = _mirrored(file, mirror)

        def get(dest: Path, file: DatasetFile = file, url: str = url) -> _Fetched:
            """Fetch one catalog file to dest with this call's settings."""
            return _fetch(
                url,
                dest,
                sha256=file.sha256,
                md5=file.md5,
                size=file.size,
                progress=progress,
                timeout=timeout,
                retries=retries,
            )

        if file.archive == "none":
            item = get(folder / file.extract_to / file.filename)
            placed = [item.path]
        else:
            if file.filename not in fetched:
                fetched[file.filename] = get(cache / file.filename)
            item = fetched[file.filename]
            _say(f"{entry_name}: extracting {file.filename} into {folder / file.extract_to}", progress)
            placed = extract(item.path, folder / file.extract_to, kind=file.archive, member_prefix=file.member_prefix)
        records.append(
            {
                "filename": file.filename,
                "url": url,
                "size": item.path.stat().st_size,
                **item.digests,
                "verified": item.verified,
                "archive": file.archive,
                "extracted": sorted(p.relative_to(folder).as_posix() for p in placed),
            }
        )
        # Recorded after each file, so a later failure does not make finished files download again.
        _write_entry(folder, entry_name, dataset, records, complete=False)
    if records != previous.get("files") or not previous.get("complete"):
        _write_entry(folder, entry_name, dataset, records, complete=True)
        _say(f"{entry_name}: ready in {folder}", progress)
    else:
        _say(f"{entry_name}: already complete in {folder} (see {MANIFEST_NAME}); nothing to do", progress)


def _in_place(record: dict[str, Any], file: DatasetFile, folder: Path) -> bool:
    """True when the manifest recorded this file with the catalog's checksum and its content still exists."""
    if file.sha256 is not None and record.get("sha256") != file.sha256:
        return False
    if file.md5 is not None and record.get("md5") != file.md5:
        return False
    extracted = record.get("extracted") or []
    return bool(extracted) and all((folder / p).exists() for p in extracted)


def _mirrored(file: DatasetFile, mirror: str | None) -> str:
    """The URL to fetch a file from: the catalog's, or `<mirror>/<filename>`."""
    if mirror is None:
        return file.url
    return mirror.rstrip("/") + "/" + urllib.parse.quote(file.filename)


def _check_mirror(mirror: str | None) -> str | None:
    """The mirror base URL, or ValueError when it is not http(s)."""
    if mirror is not None and urllib.parse.urlsplit(mirror).scheme not in ("http", "https"):
        raise ValueError(f"{MIRROR_ENV}={mirror!r}: expected an http:// or https:// URL of a folder of catalog files")
    return mirror


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, or an empty one when missing or unreadable (then everything is fetched)."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _manifest_entry(folder: Path, entry_name: str) -> dict[str, Any]:
    """What the manifest recorded for one entry ({} when nothing usable is there)."""
    datasets = _read_manifest(folder).get("datasets")
    entry = datasets.get(entry_name) if isinstance(datasets, dict) else None
    return entry if isinstance(entry, dict) else {}


def _write_entry(
    folder: Path, entry_name: str, dataset: Dataset, records: list[dict[str, Any]], *, complete: bool
) -> None:
    """Record one entry in `<folder>/srkit_manifest.json`, keeping the other entries that share the folder."""
    from srkit.fs import atomic_write

    manifest = _read_manifest(folder)
    known = manifest.get("datasets")
    datasets: dict[str, Any] = known if isinstance(known, dict) else {}
    datasets[entry_name] = {
        "name": entry_name,
        "description": dataset.description,
        "license": dataset.license,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": complete,
        "files": records,
    }
    manifest = {"srkit_manifest": 1, "srkit_version": __version__, "datasets": datasets}
    atomic_write(folder / MANIFEST_NAME, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def _say(message: str, enabled: bool) -> None:
    """A status line on stderr (stdout stays for results), unless progress output is off."""
    if enabled:
        print(message, file=sys.stderr, flush=True)
