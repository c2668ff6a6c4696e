"""Every test talks to the real `mneme` binary: $MNEME_BIN, or the checkout's cargo build."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mneme_client.testing import MnemeServer

ROOT = Path(__file__).resolve().parents[3]


def pytest_configure(config: pytest.Config) -> None:
    if "MNEME_BIN" not in os.environ:
        for build in ("debug", "release"):
            candidate = ROOT / "target" / build / "mneme"
            if candidate.is_file():
                os.environ["MNEME_BIN"] = str(candidate)
                break


@pytest.fixture
def server() -> Iterator[MnemeServer]:
    with MnemeServer() as s:
        yield s


def minilm_dir() -> str | None:
    path = os.environ.get("MNEME_MINILM_DIR")
    if path is None and os.environ.get("CI"):
        raise AssertionError("MNEME_MINILM_DIR must be set in CI")
    return path
