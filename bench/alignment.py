"""Regenerate the baseline table of docs/alignment.md: train the four heads, evaluate every dev set.

    .venv/bin/python bench/alignment.py --data ../shared/data --work .crossroute/alignment \
        --out bench/alignment.json --markdown docs/alignment-table.md

Uses the same code as `crossroute train` and `crossroute eval` (exact search). The base bundle is the
default one (built if missing). Deterministic: seeds and sorted inputs throughout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from models.config import load_spec
from models.embedder import Embedder
from models.eval.dataset import load_dataset
from models.eval.run import evaluate
from models.export.build import build_bundle
from models.settings import default_bundle_dir
from models.train.run import train_bundle

PAIRS = ("myntra-t2i", "photo-routing", "flickr8k")
SUPPORT = ("banking77", "clinc150", "stackfaq", "photo-routing")
DATASETS = (
    "myntra-t2i",
    "myntra-i2t",
    "myntra-attr2i",
    "photo-routing",
    "flickr8k",
    "stackfaq",
    "banking77",
    "clinc150",
)
METHODS = ("naive", "linear", "inbatch", "mined")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path(".crossroute/alignment"))
    ap.add_argument("--out", type=Path, default=Path("bench/alignment.json"))
    ap.add_argument("--markdown", type=Path, default=Path("docs/alignment-table.md"))
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    base = default_bundle_dir()
    if not (base / "manifest.json").exists():
        print(f"building the default bundle into {base}", flush=True)
        build_bundle(load_spec("default"), base)
    results: dict[str, dict[str, object]] = {}
    for method in args.methods.split(","):
        out = args.work / method
        start = time.time()
        manifest = train_bundle(
            base, [args.data / p for p in PAIRS], out, method=method,  # type: ignore[arg-type]
            support_folders=[args.data / s for s in SUPPORT], cache_dir=args.work / "features",
        )  # fmt: skip
        print(f"{method}: {manifest.space_id} trained in {time.time() - start:.0f} s", flush=True)
        embedder = Embedder.load(out)
        results[method] = {"space_id": manifest.space_id, "datasets": {}}
        for name in DATASETS:
            report = evaluate(load_dataset(args.data / name), embedder, latency_sample=20)
            results[method]["datasets"][name] = {  # type: ignore[index]
                "metrics": report["metrics"],
                "out_of_scope": report.get("out_of_scope"),
            }
            print(f"  {name}: {report['metrics']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| dataset | metric | " + " | ".join(results) + " |",
        "|---|---|" + "---|" * len(results),
    ]
    rows = [(d, m) for d in DATASETS for m in ("recall@1", "recall@10", "ndcg@10")]
    for d, m in rows:
        vals = [results[meth]["datasets"][d]["metrics"][m] for meth in results]  # type: ignore[index]
        best = max(vals)
        cells = [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in vals]
        lines.append(f"| {d} | {m} | " + " | ".join(cells) + " |")
    oos = [results[meth]["datasets"]["clinc150"]["out_of_scope"] for meth in results]  # type: ignore[index]
    lines.append(
        "| clinc150 | out-of-scope F1 (threshold fit on dev) | "
        + " | ".join(f"{o['f1']:.3f} (t={o['threshold']:.3f})" for o in oos)
        + " |"
    )
    write_markdown(args.markdown, lines)
    return 0


def write_markdown(path: Path, lines: list[str]) -> None:
    """Write a table (one line per row) and show it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    sys.exit(main())
