"""Shared fixtures: the real data folder (../shared/data or $SRKIT_DATA) when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from srkit.paths import MissingDataError, data_root


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """srkit's cache (ONNX exports, runtime choices of --backend auto) in a temporary folder, not the user's:
    a choice stored by a real run must not change what the tests run."""
    before = os.environ.get("SRKIT_CACHE")
    root = tmp_path_factory.mktemp("srkit-cache")
    os.environ["SRKIT_CACHE"] = str(root)
    yield root
    if before is None:
        os.environ.pop("SRKIT_CACHE", None)
    else:
        os.environ["SRKIT_CACHE"] = before


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The data folder; CI must have it (a skip there would hide a broken data path), elsewhere skip."""
    try:
        return data_root()
    except MissingDataError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"data folder not available: {err}")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread for a whole module (training tests): deterministic and light on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
