"""The mining ablation of docs/alignment.md, over several seeds: does stage 2 help, and do the mined
negatives, not just the extra epochs, help?

    .venv/bin/python bench/mining.py --data ../shared/data --work .crossroute/alignment \
        --seeds 20261126,7,11 --out bench/mining.json --markdown docs/mining-table.md

Variants (all with the pair sets and support sets of bench/alignment.py, letterbox + colour +
intermediate-stage image features and hashed-word text features, or without the stages with
``--no-stages``, without the words with ``--no-lexical``):
``inbatch`` (stage 1 only), ``control`` (stage 2 with the mined loss weighted 0 and no edits: the
same extra epochs without mined negatives), ``mined-noedits`` (stage 2's mined neighbours only, the
``mined`` of the revisions before one-word edits), ``mined`` (the default: one-word edits of each
photo's own text as negatives of the image head from stage-1 epoch 4 on, then stage 2);
``--variants`` also takes the
ablations ``mined-plain`` (no attribute-aware filter and masking), ``mined-skip8``,
``mined-nomask``, ``mined-mask2``, ``mined-batch``, the ``-do1`` (feature dropout) and the
``mined-edit*`` ones (see
``EXTRA_VARIANTS``: their switches are ``models.train.ablations.Ablations`` fields, options
measured and not kept, next to the shipped ``TrainConfig``'s). ``--trace FILE.md`` also scores
the dev splits after every epoch of every stage (a diagnostic: training never sees them) and
writes that table. Each variant is trained with
``train_heads`` (the code behind ``crossroute train``) and scored on the dev splits with the same
metrics as ``crossroute eval`` (exact search); frozen features are computed once and cached in
``--work``, so a run takes minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from alignment import PAIRS, SUPPORT, write_markdown

from models.embedder import Embedder
from models.eval.dataset import load_dataset
from models.eval.metrics import rank_metrics
from models.settings import default_bundle_dir
from models.train.ablations import Ablations
from models.train.contrastive import train_heads
from models.train.edits import EditSet
from models.train.features import (
    PairSet,
    align_pair_texts,
    encode_pairs,
    load_pair_sets,
    support_text_pairs,
)
from models.train.heads import Heads, TrainConfig
from models.train.run import pair_edits, training_embedder

EVAL = ("myntra-t2i", "myntra-i2t", "myntra-attr2i", "photo-routing")
NO_EDITS = {"edit_negatives": 0}
SHARED_TEMPERATURE = {"edit_moves_temperature": True}
TEXT_HEAD = {"edit_moves_text_head": True}  # the edits move the text head too (before 2026-11-27)
SYMMETRIC = {
    "edit_loss": "symmetric",
    "edit_negatives": 4,
    "edit_from_epoch": 4,
    **SHARED_TEMPERATURE,
    **TEXT_HEAD,
}
# Each variant: (run stage 2, overrides of TrainConfig and Ablations fields; see variant_config).
VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "inbatch": (False, {}),
    "control": (True, {"mined_weight": 0.0, **NO_EDITS}),
    "mined-noedits": (True, NO_EDITS),
    "mined": (True, {}),
}
EXTRA_VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {  # the ablations of docs/alignment.md
    # (all without one-word edits, as they were measured before the edits existed)
    "mined-plain": (
        True,
        {"false_negative_attributes": False, "mask_same_attributes": "none", **NO_EDITS},
    ),
    "mined-skip8": (
        True,
        {
            "false_negative_attributes": False,
            "mask_same_attributes": "none",
            "mine_skip": 8,
            **NO_EDITS,
        },
    ),
    "mined-nomask": (True, {"mask_same_attributes": "none", **NO_EDITS}),
    "mined-mask2": (True, {"mask_same_attributes": "stage2", **NO_EDITS}),
    "inbatch-ema": (False, {"ema_decay": 0.99}),
    "mined-ema": (True, {"ema_decay": 0.99, **NO_EDITS}),
    # a share of each stage-2 batch filled with mined neighbourhoods (negatives of each other)
    "mined-batch": (True, {"mined_weight": 0.0, "mined_batch_share": 0.5, **NO_EDITS}),
    # dropout on the heads' input features (word dropout on the lexical block)
    "inbatch-do1": (False, {"feature_dropout": 0.1}),
    "control-do1": (True, {"feature_dropout": 0.1, "mined_weight": 0.0, **NO_EDITS}),
    "mined-do1": (True, {"feature_dropout": 0.1, **NO_EDITS}),
    # one-word edits as a symmetric InfoNCE term (the first design): from stage-1 epoch 4, in
    # stage 2 only, and earlier, more and heavier
    "mined-edit4": (True, SYMMETRIC),
    "mined-edit-stage2": (True, {**SYMMETRIC, "edit_from_epoch": None}),
    "mined-edit2x8": (
        True,
        {**SYMMETRIC, "edit_negatives": 8, "edit_from_epoch": 2, "edit_weight": 1.0},
    ),
    # the control of the symmetric term: same schedule and loss terms, with an empty edit set (the
    # term still adds in-batch loss without edits)
    "mined-edit-empty": (True, SYMMETRIC),
    # the edit term's other forms: the image→text direction alone (batch texts + edits as
    # candidates), and each image against its own text and edits only (as first measured: with
    # the temperature learning from the edit term too)
    "mined-edit-i2t": (True, {"edit_loss": "i2t", **SHARED_TEMPERATURE, **TEXT_HEAD}),
    "mined-edit-local": (True, {"edit_loss": "local", **SHARED_TEMPERATURE, **TEXT_HEAD}),
    # the temperature moved by the edit term too (the default before), and not (the default now)
    "mined-edit-sharedtemp": (True, {**SHARED_TEMPERATURE, **TEXT_HEAD}),
    "mined-edit-fixedtemp": (True, {"edit_moves_temperature": False, **TEXT_HEAD}),
    "mined-edit-local-fixedtemp": (
        True,
        {"edit_loss": "local", "edit_moves_temperature": False, **TEXT_HEAD},
    ),
    # (measured with the edits moving the text head, as the default did then:) edits whose swap
    # the owner's photo does not show left out; a lower dose of edits (2 per photo instead of 4,
    # from stage-1 epoch 6 instead of 4); edits drawn at random among the photo's own instead of
    # the hardest; and that default itself
    "mined-seen": (True, {"edit_min_visibility": 0.01, **TEXT_HEAD}),
    "mined-edit2": (True, {"edit_negatives": 2, **TEXT_HEAD}),
    "mined-edit-from6": (True, {"edit_from_epoch": 6, **TEXT_HEAD}),
    "mined-edit-random": (True, {"edit_pick": "random", **TEXT_HEAD}),
    "mined-edit-textgrad": (True, TEXT_HEAD),
}
VARIANTS_ALL = {**VARIANTS, **EXTRA_VARIANTS}
_STATE: dict[str, Any] = {}


def variant_config(variant: str, seed: int | None = None) -> tuple[bool, TrainConfig, Ablations]:
    """Whether ``variant`` runs stage 2, and its hyperparameters and ablations: the shipped ones
    with the variant's overrides, each applied to the class that has the field (and ``seed``).

    Raises:
        KeyError: an unknown variant.
        TypeError: an override that is a field of neither class.
    """
    mined, overrides = VARIANTS_ALL[variant]
    shipped = {f.name for f in fields(TrainConfig)}
    if seed is not None:
        overrides = {**overrides, "seed": seed}
    cfg = TrainConfig(**{k: v for k, v in overrides.items() if k in shipped})
    return mined, cfg, Ablations(**{k: v for k, v in overrides.items() if k not in shipped})


def _raw(emb: Embedder, data: Path, name: str, work: Path) -> dict[str, np.ndarray]:
    """Frozen features of a dev set's corpus ("c") and queries ("q"): text and image, with masks."""
    cache = work / f"dev-{name}-{emb.manifest.digest()[:16]}.npz"
    if cache.is_file():
        cached = dict(np.load(cache))
        if cached["c_t"].shape[1] == emb.text_feature_dim:  # else: written by an older revision
            return cached
    ds = load_dataset(data / name)
    out: dict[str, np.ndarray] = {}
    for part, items in (
        ("c", [(d.full_text(), d.image) for d in ds.corpus]),
        ("q", [(q.text, q.image) for q in ds.queries]),
    ):
        has_t = np.array([bool(t and t.strip()) for t, _ in items])
        has_i = np.array([im is not None for _, im in items])
        tf = np.zeros((len(items), emb.text_feature_dim), np.float32)
        if has_t.any():
            tf[has_t] = emb.head_text_features(
                [t or "" for (t, _), h in zip(items, has_t, strict=True) if h]
            )
        out[f"{part}_t"], out[f"{part}_ht"], out[f"{part}_hi"] = tf, has_t, has_i
        idx = np.flatnonzero(has_i)
        out[f"{part}_i"] = np.zeros((len(items), emb.image_feature_dim), np.float32)
        for s in range(0, len(idx), 256):
            decoded, errors = emb.preprocess_images(
                [ds.root / str(items[i][1]) for i in idx[s : s + 256]]
            )
            if any(e is not None for e in errors):
                raise SystemExit(f"{name}: {next(e for e in errors if e is not None)}")
            out[f"{part}_i"][idx[s : s + 256]] = emb.decoded_image_features(
                [im for im in decoded if im is not None]
            )
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def _project(model: Heads, r: dict[str, np.ndarray], part: str) -> np.ndarray:
    """Embed items like ``models.eval.run.embed_items``: sum of the modalities present, unit norm."""
    ht, hi = r[f"{part}_ht"], r[f"{part}_hi"]
    v = np.zeros((len(ht), model.text[0].out_features), np.float32)
    with torch.no_grad():
        if ht.any():
            v[ht] += model.encode_text(torch.from_numpy(r[f"{part}_t"][ht])).numpy()
        if hi.any():
            v[hi] += model.encode_image(torch.from_numpy(r[f"{part}_i"][hi])).numpy()
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _score(model: Heads) -> dict[str, dict[str, float]]:
    out = {}
    for name, (relevant, r) in _STATE["dev"].items():
        scores = _project(model, r, "q") @ _project(model, r, "c").T
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        m = rank_metrics(ranked, relevant, (1, 10))
        out[name] = {k: round(m[k], 4) for k in ("recall@1", "recall@10", "ndcg@10")}
    return out


def _no_edits(edits: EditSet) -> EditSet:
    """An edit set with no edits (same encoder width and lexical spec)."""
    none = np.zeros(0, dtype=np.int64)
    return EditSet(none, (), edits.encoder_feats[none], edits.lexical)


def _run(job: tuple[str, int]) -> dict[str, Any]:
    variant, seed = job
    mined, cfg, ablations = variant_config(variant, seed)
    start = time.time()
    trace: list[dict[str, Any]] = []

    def observe(stage: str, epoch: int, model: Heads) -> None:
        trace.append({"stage": stage, "epoch": epoch, "metrics": _score(model)})

    model, record = train_heads(
        _STATE["pairs"], _STATE["support"], cfg, mined=mined,
        observe=observe if _STATE["trace"] else None,
        edits=(_no_edits(edits) if variant == "mined-edit-empty" else edits)
        if (edits := _STATE["edits"].get(ablations.edit_min_visibility)) is not None
        and cfg.edit_negatives
        else None,
        ablations=ablations,
    )  # fmt: skip
    out = {
        "variant": variant,
        "seed": seed,
        "seconds": round(time.time() - start),
        "best_epoch": [record.get(s, {}).get("best_epoch") for s in ("stage1", "stage2")],
        "mining": record.get("mining"),
        "metrics": _score(model),
    }
    if trace:  # the held-back score of each epoch next to its dev metrics
        held = {
            s: record[s].get("validation_per_epoch", [])
            for s in ("stage1", "stage2")
            if s in record
        }
        for row in trace:
            scores = held.get(row["stage"].replace(" ", ""), [])
            row["held_back"] = scores[row["epoch"]] if row["epoch"] < len(scores) else None
        out["trace"] = trace
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--work", type=Path, default=Path(".crossroute/alignment"))
    ap.add_argument("--seeds", default="20261126,7,11")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--jobs", type=int, default=2, help="trainings in parallel (one thread each)")
    ap.add_argument(
        "--no-stages",
        action="store_true",
        help="image features without the encoder's intermediate stages (the ablation)",
    )
    ap.add_argument(
        "--no-lexical",
        action="store_true",
        help="text features without the hashed-word block (the ablation)",
    )
    ap.add_argument(
        "--trace",
        type=Path,
        metavar="FILE.md",
        help="also score the dev splits after every epoch and write that table here",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/mining.json"))
    ap.add_argument("--markdown", type=Path, default=Path("docs/mining-table.md"))
    ap.add_argument(
        "--render",
        action="store_true",
        help="train nothing: write the --markdown (and --trace) tables from the results in --out"
        " (name --markdown too, or the default table is overwritten)",
    )
    args = ap.parse_args()
    if args.render:
        results = json.loads(args.out.read_text())
        _write_tables(results, list(dict.fromkeys(r["variant"] for r in results)), args)
        return 0
    # The features `crossroute train` reads (or those of `--no-stages` / `--no-lexical`).
    emb = training_embedder(
        default_bundle_dir(), stages=not args.no_stages, lexical=not args.no_lexical
    )
    sets, _ = align_pair_texts(load_pair_sets([args.data / p for p in PAIRS]))
    pairs: PairSet = encode_pairs(emb, sets, args.work / "features")
    text_pairs = support_text_pairs([args.data / s for s in SUPPORT])
    q = emb.head_text_features([t.query for t in text_pairs])
    a = emb.head_text_features([t.target for t in text_pairs])
    _, g = np.unique(np.array([t.group for t in text_pairs]), return_inverse=True)
    _STATE["pairs"], _STATE["support"] = pairs, (q, a, g.astype(np.int64))
    _STATE["edits"] = {}  # per edit_min_visibility of the variants that train with edits
    for v in args.variants.split(","):
        mined, cfg, ablations = variant_config(v)
        visibility = ablations.edit_min_visibility
        if mined and cfg.edit_negatives > 0 and visibility not in _STATE["edits"]:
            _STATE["edits"][visibility] = pair_edits(
                emb, pairs, args.work / "features", min_visibility=visibility
            )
    dev = {}
    for name in EVAL:
        ds = load_dataset(args.data / name)
        index = {d.id: i for i, d in enumerate(ds.corpus)}
        relevant = [frozenset(index[d] for d in ds.qrels.get(x.id, ())) for x in ds.queries]
        dev[name] = (relevant, _raw(emb, args.data, name, args.work))
    _STATE["dev"] = dev
    _STATE["trace"] = args.trace is not None
    jobs = [(v, int(s)) for s in args.seeds.split(",") for v in args.variants.split(",")]
    results = []
    with get_context("fork").Pool(args.jobs) as pool:  # children share the features read above
        for r in pool.imap(_run, jobs):
            print(json.dumps(r), flush=True)
            results.append(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    _write_tables(results, args.variants.split(","), args)
    return 0


def _write_tables(
    results: list[dict[str, Any]], variants: list[str], args: argparse.Namespace
) -> None:
    """The per-seed and mean table (``--markdown``), and the trace table (``--trace``)."""
    metrics = [  # the metrics of issue #4's acceptance
        ("myntra-t2i", "recall@10"),
        ("myntra-i2t", "recall@10"),
        ("myntra-attr2i", "ndcg@10"),
        ("photo-routing", "recall@1"),
    ]
    lines = _header(["variant", "seed", "best epochs (stage 1, 2)"], metrics)
    for r in results:
        cells = [f"{r['metrics'][d][m]:.3f}" for d, m in metrics]
        epochs = ", ".join("-" if e is None else str(e) for e in r["best_epoch"])
        lines.append(f"| {r['variant']} | {r['seed']} | {epochs} | " + " | ".join(cells) + " |")
    for v in variants:
        rows = [r for r in results if r["variant"] == v]
        means = [np.mean([r["metrics"][d][m] for r in rows]) for d, m in metrics]
        lines.append(
            f"| **{v}** | mean of {len(rows)} | | "
            + " | ".join(f"**{x:.3f}**" for x in means)
            + " |"
        )
    write_markdown(args.markdown, lines)
    if args.trace is not None:
        write_markdown(args.trace, _trace_lines(results, metrics))


def _header(columns: list[str], metrics: list[tuple[str, str]]) -> list[str]:
    """A markdown table's first two lines: ``columns``, then one column per (dataset, metric)."""
    names = columns + [f"{d} {m}" for d, m in metrics]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _trace_lines(results: list[dict[str, Any]], metrics: list[tuple[str, str]]) -> list[str]:
    """One row per (run, stage, epoch): the held-back score that selects epochs, and dev metrics."""
    lines = _header(["variant", "seed", "stage", "epoch", "held-back score"], metrics)
    for r in results:
        for row in r.get("trace", []):
            held = "-" if row["held_back"] is None else f"{row['held_back']:.4f}"
            cells = [f"{row['metrics'][d][m]:.3f}" for d, m in metrics]
            lines.append(
                f"| {r['variant']} | {r['seed']} | {row['stage']} | {row['epoch']} | {held} | "
                + " | ".join(cells)
                + " |"
            )
    return lines


if __name__ == "__main__":
    sys.exit(main())
