"""The serving path (streams/router import it) works with torch absent: onnxruntime, tokenizers,
numpy and Pillow only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BLOCK_AND_EMBED = """
import importlib.abc, sys
BLOCKED = {"torch", "torchvision", "timm", "transformers", "open_clip", "sentence_transformers"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: serving must not need it")
sys.meta_path.insert(0, Block())
from pathlib import Path
from models.embedder import Embedder
import streams.cli, router.schemas  # the packages that use the embedder import cleanly too
e = Embedder.load(Path(sys.argv[1]))
t = e.embed_texts(["my card was charged twice"])
i = e.embed_images([Path(sys.argv[2])])
s = e.embed_screenshots([Path(sys.argv[2])])
assert t.ok.all() and i.ok.all() and s.image.ok.all()
assert not any(m.split(".")[0] in BLOCKED for m in sys.modules)
print("served", e.space_id, t.vectors.shape, i.vectors.shape)
"""


def test_embedding_api_runs_without_torch(default_bundle: Path, real_images: list[Path]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_AND_EMBED, str(default_bundle), str(real_images[0])],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "served sp-" in out.stdout


def test_building_without_torch_names_the_extra() -> None:
    code = BLOCK_AND_EMBED.split("from pathlib import Path")[0] + (
        "from models.export import require_torch\n"
        "try:\n    require_torch()\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert "MissingDependencyError" in out.stdout and "crossroute[train]" in out.stdout
