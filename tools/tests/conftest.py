"""Shared set-up of the tools' tests: the tools import as modules, and the packaged set that
scripts/install-packaged-models.sh installed (FACERELAY_PACKAGED_DIR, default models/packaged)."""

import os
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOOLS))

import packaged_models  # noqa: E402


@pytest.fixture(scope="session")
def packaged():
    """The installed set's folder; the tests fail (never skip) when it is incomplete."""
    d = Path(os.environ.get("FACERELAY_PACKAGED_DIR", packaged_models.ROOT / "models" / "packaged"))
    bad = {e["name"]: s for e in packaged_models.entries() if (s := packaged_models.state(d, e)) != "ok"}
    assert not bad, f"packaged set in {d} is incomplete, run scripts/install-packaged-models.sh: {bad}"
    return d


@pytest.fixture(scope="session")
def entries():
    return {e["name"]: e for e in packaged_models.entries()}
