"""File-system helpers: atomic writes, output-name checks, finding image files."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})


# atomic_write's temporary name adds a dot, ".tmp" and 8 hex digits to the final one.
_TMP_NAME_EXTRA = 13
_NAME_MAX = 255  # bytes per file name on ext4, XFS, APFS, NTFS (UTF-16 units there)


def check_name_length(path: Path) -> None:
    """Refuse, before any work, an output whose file name (or its temporary twin) the file system cannot hold."""
    size = len(os.fsencode(path.name))
    if size + _TMP_NAME_EXTRA > _NAME_MAX:
        raise ValueError(
            f"output file name {path.name[:40]}... is {size} bytes; file systems allow {_NAME_MAX} "
            f"(and srkit needs {_TMP_NAME_EXTRA} more while writing): use a shorter name or --suffix"
        )


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write bytes via a temp file in the same folder then os.replace, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{secrets.token_hex(4)}")
    # os.open with O_EXCL (not mkstemp) so the final file gets umask-based permissions, not 0600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def same_file(a: Path, b: Path) -> bool:
    """True when both paths name the same file (hard links and case-insensitive filesystems included)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def list_images(inputs: Sequence[str | Path], *, recursive: bool = True) -> list[Path]:
    """Expand files and folders into image paths: files kept as given, folders scanned by suffix."""
    found: list[Path] = []
    for item in inputs:
        root = Path(item)
        if not root.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file or folder", str(root))
        if not root.is_dir():
            found.append(root)  # kept even with an unknown suffix: read_image will say what is wrong
            continue
        candidates = root.rglob("*") if recursive else root.glob("*")
        found.extend(
            sorted(
                p
                for p in candidates
                # Hidden entries are skipped: macOS "._x.png" resource forks and our own ".x.png.tmp" files.
                if p.suffix.lower() in IMAGE_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(root).parts)
            )
        )
    return list(dict.fromkeys(found))  # drop duplicates (a file given and also inside a given folder)
