"""The `srkit` command: parse arguments, then call one library function per command.

Each command's arguments are declared beside it (cli/evaluate.py, upscale.py, train.py, data.py); this module
puts the parser together and maps errors to exit statuses.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from srkit import __version__
from srkit.cli import data, evaluate, train, upscale
from srkit.cli.common import resolve_precision

__all__ = ["build_parser", "main", "resolve_precision"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every srkit command."""
    parser = argparse.ArgumentParser(prog="srkit", description="4x single-image super-resolution toolkit")
    parser.add_argument("--version", action="version", version=f"srkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (evaluate, upscale, train, data):
        module.register(sub)
    return parser


def _explain(err: Exception) -> tuple[int, str]:
    """(exit status, one line) for an error that reached the CLI: 2 for the user's to fix, 1 for the rest."""
    from srkit.data.download import DownloadError

    user = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)
    if isinstance(err, (*user, ValueError, DownloadError)):
        return 2, str(err)  # a missing file, a bad option or config value, a file that is not what it should be
    if isinstance(err, OSError):
        # File names too long for the file system are the user's to fix; a full disk or an I/O error is not.
        return (2 if err.errno == errno.ENAMETOOLONG else 1), str(err)
    if isinstance(err, MemoryError):
        return 1, f"out of memory ({err or 'allocation failed'}); try a smaller --tile"
    return 1, (
        f"unexpected {type(err).__name__}: {err} "
        "(run again with --debug or SRKIT_DEBUG=1 for the traceback, and please report it)"
    )


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("SRKIT_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `srkit` console script; returns the exit status.

    0 done; 1 some work failed (a bad file in a batch, an unexpected error: one line, no traceback);
    2 a user error found before any work (a missing file, a bad option or config value, nothing to do);
    130 interrupted. `--debug` (anywhere) or SRKIT_DEBUG=1 shows the traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Only `train` takes free-form --section.key=value overrides; anything else unknown is an error.
    overrides = [e for e in extra if e.startswith("--") and "=" in e]
    unknown = [e for e in extra if e not in overrides]
    if unknown or (overrides and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    args.overrides = [e[2:] for e in overrides]
    sub = getattr(args, "data_command", None) or getattr(args, "viz_command", None)
    where = f"srkit {args.command}" + (f" {sub}" if sub else "")
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        code, text = _explain(err)
        print(f"{where}: error: {text}", file=sys.stderr)
        return code
    return status
