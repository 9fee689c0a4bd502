"""Where a ticket photo identifies a catalog product: the ``product_match`` threshold, on public data.

Catalog products are Myntra dev products (title + image, indexed the way the worker indexes a
product: the normalised sum of its text and image vectors; the title is the dev query that names
the product). Each product's own photo is
"re-photographed" the way customers do (seeded: scaled to 75-95 %, off-centre on a random light
background, rotated up to 8°, JPEG 80) and compared with every product document. For each threshold
the report gives the share of photos whose best product reaches it (coverage) and, among those, the
share whose best product has the photo's own article type (category precision: a wrong category
routes a ticket to another category's policy, so precision comes first).

    .venv/bin/python bench/product_match.py --data ../shared/data --out bench/product_match.json
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from models.projection import l2_normalize
from models.settings import ModelsSettings

THRESHOLDS = (0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)


def customer_photo(data: bytes, rng: np.random.Generator) -> bytes:
    """A catalogue shot as a customer might photograph the product."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    scale = rng.uniform(0.75, 0.95)
    bg = tuple(int(x) for x in rng.integers(200, 256, 3))
    canvas = Image.new("RGB", (int(w * 1.2), int(h * 1.2)), bg)
    small = img.resize((int(w * scale), int(h * scale)))
    x = int(rng.integers(0, canvas.size[0] - small.size[0] + 1))
    y = int(rng.integers(0, canvas.size[1] - small.size[1] + 1))
    canvas.paste(small, (x, y))
    buf = io.BytesIO()
    canvas.rotate(float(rng.uniform(-8, 8)), fillcolor=bg).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the default)")
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("bench/product_match.json"))
    args = parser.parse_args()

    bundle = ModelsSettings().model.resolved_bundle_dir(args.model)
    embedder = Embedder.load(bundle, providers="cpu")
    data = load_dataset(args.data / "myntra-t2i")
    # the corpus rows are product images; a product's title is the query that names it
    titles = {doc: q.text for q in data.queries for doc in data.qrels.get(q.id, ()) if q.text}
    rows = [r for r in data.corpus if r.image and r.id in titles][::4][: args.products]
    cats = np.array([r.attrs.get("article_type", "?") for r in rows])
    images = [(data.root / (r.image or "")).read_bytes() for r in rows]
    docs = l2_normalize(
        embedder.embed_texts([titles[r.id] for r in rows]).vectors
        + embedder.embed_images(images).vectors
    )
    rng = np.random.default_rng(20261126)
    photos = embedder.embed_images([customer_photo(b, rng) for b in images]).vectors
    scores = photos @ docs.T
    top, best = scores.argmax(1), scores.max(1)
    right = cats[top] == cats
    report = {
        "bundle": str(bundle),
        "space_id": embedder.space_id,
        "products": len(rows),
        "top1_own_product": round(float(np.mean(top == np.arange(len(rows)))), 4),
        "top1_category_right": round(float(right.mean()), 4),
        "best_score_percentiles": dict(
            zip(
                ("p5", "p25", "p50", "p75", "p95"),
                np.percentile(best, [5, 25, 50, 75, 95]).round(4).tolist(),
                strict=True,
            )
        ),
        "thresholds": [
            {
                "threshold": t,
                "coverage": round(float((best >= t).mean()), 4),
                "category_precision": round(float(right[best >= t].mean()), 4)
                if (best >= t).any()
                else None,
            }
            for t in THRESHOLDS
        ],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in report["thresholds"]:
        print(row)


if __name__ == "__main__":
    main()
