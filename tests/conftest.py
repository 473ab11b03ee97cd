"""Shared fixtures. ``shared_data_dir`` points at the real eval sets beside the project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def locate_shared_data() -> Path | None:
    candidate = Path(os.environ.get("KDBENCH_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    return candidate if (candidate / "dolly-minillm-test.jsonl").is_file() else None


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder of real eval sets; skips without it, but fails under CI=true so CI always runs them."""
    found = locate_shared_data()
    if found is None:
        reason = ("real eval data not found: set KDBENCH_DATA_DIR or place the shared/ folder "
                  "beside the project (../shared/data)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + " -- required when CI=true")
        pytest.skip(reason)
    return found
