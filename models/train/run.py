"""``crossroute train``: fit a head on curated pairs and write a bundle derived from a base bundle.

The derived bundle reuses the base bundle's encoder files byte for byte (same ONNX, tokenizer, OCR),
adds ``projection.safetensors`` and records the head method, the weights hash and the training-data
digest in its manifest, so its space id differs from the base's and from any other training run.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from models.bundle import (
    Manifest,
    ProjectionInfo,
    compute_space_id,
    file_entry,
    hash_files,
    load_manifest,
    staged_bundle,
    write_manifest,
)
from models.config import (
    BundleSpec,
    ColourFeatures,
    HeadSpec,
    ImagePreprocess,
    LexicalFeatures,
    TextPreprocess,
    canonical_json,
)
from models.embedder import Embedder
from models.progress import Progress, no_progress
from models.shipped import ShippedHead
from models.train.edits import EditSet, encode_edits
from models.train.features import (
    PairSet,
    TextPair,
    align_pair_texts,
    encode_pairs,
    load_pair_sets,
    support_text_pairs,
)

if TYPE_CHECKING:
    from models.train.heads import TrainConfig

__all__ = [
    "Method",
    "derive_bundle",
    "pair_edits",
    "reproduce_head",
    "train_bundle",
    "training_embedder",
]

Method = Literal["naive", "linear", "inbatch", "mined"]
MIN_PAIRS = 8
"""Fewer pairs cannot make a contrastive batch worth the name (nor leave anything to hold out)."""


def derive_bundle(
    base_dir: Path,
    out: Path,
    head: HeadSpec,
    projection: tuple[dict[str, np.ndarray], str, dict[str, Any]] | None,
    *,
    image_preprocess: ImagePreprocess | None = None,
    text_preprocess: TextPreprocess | None = None,
) -> Manifest:
    """Write ``out``: the base bundle's encoders + a head (weights, data digest, training record),
    optionally with another image preprocessing (letterbox, colour and stage features) or text
    preprocessing (the lexical block) than the base's."""
    from safetensors.numpy import save_file

    base = load_manifest(base_dir, verify=True)
    spec = _with_preprocess(base.spec, image_preprocess, text_preprocess).model_copy(
        update={"head": head}
    )
    with staged_bundle(out) as work:
        for rel in base.files:
            if base.projection is not None and rel == base.projection.weights:
                continue  # the base's own head: the derived bundle has its own (or none)
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base_dir / rel, work / rel)
        info = None
        if projection is not None:
            tensors, data_digest, record = projection
            save_file(
                {k: np.ascontiguousarray(v) for k, v in sorted(tensors.items())},
                str(work / "projection.safetensors"),
            )
            info = ProjectionInfo(
                weights="projection.safetensors",
                weights_sha256=file_entry(work / "projection.safetensors").sha256,
                training_data_digest=data_digest,
                training=record,
            )
        files = hash_files(work)
        manifest = base.model_copy(
            update={
                "spec": spec,
                "dim": spec.dim,
                "projection": info,
                "files": files,
                "space_id": compute_space_id(spec, files, info),
            }
        )
        manifest = Manifest.model_validate(manifest.model_dump())
        write_manifest(work, manifest)
    return manifest


def training_embedder(
    base_dir: Path,
    *,
    image_crop: Literal["center", "pad"] = "pad",
    colour: bool = True,
    stages: bool = True,
    lexical: bool = True,
) -> Embedder:
    """The base bundle's encoders reading images and texts the way a trained head will (the
    defaults are ``crossroute train``'s): letterbox or centre crop, colour histogram,
    intermediate-stage features; the lexical block next to the text features.

    Raises:
        ModelsError: ``stages`` and the base image encoder exports no stage features.
    """
    base = load_manifest(base_dir, verify=True)
    pre = base.spec.image.preprocess.model_copy(
        update={
            "crop": image_crop,
            "colour": ColourFeatures() if colour else None,
            "stages": stages,
        }
    )
    text_pre = base.spec.text.preprocess.model_copy(
        update={"lexical": LexicalFeatures() if lexical else None}
    )
    spec = _with_preprocess(base.spec, pre, text_pre).model_copy(update={"head": HeadSpec()})
    # the base's encoders only: a head it may serve (the shipped one) reads other features
    manifest = base.model_copy(update={"spec": spec, "dim": spec.dim, "projection": None})
    return Embedder(base_dir, manifest, providers="cpu")


def _with_preprocess(
    spec: BundleSpec, image: ImagePreprocess | None, text: TextPreprocess | None = None
) -> BundleSpec:
    update: dict[str, Any] = {}
    if image is not None:
        update["image"] = spec.image.model_copy(update={"preprocess": image})
    if text is not None:
        update["text"] = spec.text.model_copy(update={"preprocess": text})
    return spec.model_copy(update=update)


def pair_edits(
    embedder: Embedder,
    pairs: PairSet,
    cache_dir: Path | None,
    progress: Progress = no_progress,
    *,
    false_negative_image_cos: float = 0.92,
    min_visibility: float | None = None,
) -> EditSet:
    """One-word edits of the pair texts (``models.train.edits``), encoded by ``embedder``'s text
    encoder (cached next to the pair features), likely false negatives (and, with
    ``min_visibility``, swaps the owner's photo does not show) left out."""
    return encode_edits(
        pairs.texts,
        pairs.sources,
        pairs.image_feats,
        embedder.text_features,
        embedder.manifest.spec.text.preprocess.lexical,
        groups=pairs.groups,
        false_negative_image_cos=false_negative_image_cos,
        min_visibility=min_visibility,
        cache_dir=cache_dir,
        cache_key=embedder.manifest.digest(),
        progress=progress,
    )


def _data_digest(pairs: PairSet, text_pairs: Sequence[TextPair]) -> str:
    h = hashlib.sha256(pairs.digest.encode())
    for t in text_pairs:
        h.update(canonical_json([t.query, t.target, t.group]))
    return h.hexdigest()


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """W minimising ||x W - y||² + alpha ||W||² (closed form), shape (x_dim, y_dim)."""
    xtx = x.T.astype(np.float64) @ x.astype(np.float64)
    return np.linalg.solve(
        xtx + alpha * np.eye(xtx.shape[0]), x.T.astype(np.float64) @ y.astype(np.float64)
    )


def train_bundle(
    base_dir: Path,
    pair_folders: Sequence[Path],
    out: Path,
    *,
    method: Method = "mined",
    support_folders: Sequence[Path] = (),
    cache_dir: Path | None = None,
    progress: Progress = no_progress,
    epoch_progress: Callable[[str, int, int], None] | None = None,
    config: TrainConfig | None = None,
    image_crop: Literal["center", "pad"] = "pad",
    colour: bool = True,
    stages: bool = True,
    lexical: bool = True,
    edits: bool = True,
) -> Manifest:
    """Train a head with ``method`` on the pairs of ``pair_folders`` and derive a bundle into ``out``.

    Methods: ``naive`` (no training: features zero-padded into one space), ``linear`` (closed-form
    ridge map from image features into the text-encoder space; text stays raw), ``inbatch``
    (contrastive heads, in-batch negatives), ``mined`` (``inbatch`` then mined hard negatives).
    Trained methods read images as ``image_crop`` says, with a colour histogram when ``colour`` and
    the encoder's intermediate-stage features when ``stages``; the contrastive methods read texts
    with the lexical block when ``lexical`` (all recorded in the derived bundle's spec); ``mined``
    adds one-word edits of the pair texts as negatives unless ``edits`` is off (or the config's
    ``edit_negatives`` is 0). ``config``: the hyperparameters (default ``TrainConfig()``, the
    shipped ones; the ablations of ``bench/mining.py`` are not reachable from here). ``naive``
    keeps the base bundle's preprocessing; ``linear`` maps into the raw text-encoder space, so its
    texts have no lexical block.
    """
    if method == "naive":  # raw features: no colour, stage or word blocks, the encoder's crop
        raw = training_embedder(
            base_dir, image_crop="center", colour=False, stages=False, lexical=False
        ).manifest.spec
        return derive_bundle(
            base_dir, out, HeadSpec(method="naive"), None,
            image_preprocess=raw.image.preprocess, text_preprocess=raw.text.preprocess,
        )  # fmt: skip
    embedder = training_embedder(
        base_dir,
        image_crop=image_crop,
        colour=colour,
        stages=stages,
        lexical=lexical and method != "linear",
    )
    pre = embedder.manifest.spec.image.preprocess
    text_pre = embedder.manifest.spec.text.preprocess
    sets, retexted = align_pair_texts(load_pair_sets(pair_folders))
    if retexted:
        progress(f"{retexted} pairs use the full text of the corpus document their title names")
    pairs = encode_pairs(embedder, sets, cache_dir, progress)
    if len(pairs.texts) < MIN_PAIRS:
        from models.exceptions import UsageError

        raise UsageError(
            f"{len(pairs.texts)} usable pairs in {', '.join(str(f) for f in pair_folders)}: "
            f"training needs at least {MIN_PAIRS} (contrastive batches need negatives)"
        )
    text_pairs = support_text_pairs(support_folders) if method in ("inbatch", "mined") else []
    digest = _data_digest(pairs, text_pairs)
    if method == "linear":
        progress("fitting the closed-form ridge map (image → text space)")
        w = _ridge(pairs.image_feats, pairs.text_feats, alpha=1.0).T.astype(np.float32)
        d = pairs.text_feats.shape[1]
        tensors = {
            "text.0.weight": np.eye(d, dtype=np.float32),
            "text.0.bias": np.zeros(d, np.float32),
            "image.0.weight": w,
            "image.0.bias": np.zeros(d, np.float32),
        }
        record = {"method": "linear", "ridge_alpha": 1.0, "pairs": len(pairs.texts)}
        return derive_bundle(
            base_dir,
            out,
            HeadSpec(method="linear", dim=d),
            (tensors, digest, record),
            image_preprocess=pre,
            text_preprocess=text_pre,
        )

    from models.train.contrastive import train_heads
    from models.train.heads import TrainConfig

    cfg = config if config is not None else TrainConfig()
    if not edits:
        cfg = replace(cfg, edit_negatives=0)
    edit_set = None
    if method == "mined" and cfg.edit_negatives > 0:
        edit_set = pair_edits(
            embedder,
            pairs,
            cache_dir,
            progress,
            false_negative_image_cos=cfg.false_negative_image_cos,
        )
        progress(f"{len(edit_set.owner)} one-word edits of {len(set(edit_set.owner))} pair texts")
    tp = None
    if text_pairs:
        progress(f"encoding {len(text_pairs)} support text pairs")
        q = embedder.head_text_features([t.query for t in text_pairs])
        a = embedder.head_text_features([t.target for t in text_pairs])
        _, g = np.unique(np.array([t.group for t in text_pairs]), return_inverse=True)
        tp = (q, a, g.astype(np.int64))
    progress(
        f"training ({method}) on {len(pairs.texts)} pairs + {len(text_pairs)} support text pairs"
    )
    model, record = train_heads(
        pairs, tp, cfg, mined=method == "mined", progress=epoch_progress, edits=edit_set
    )
    record = {
        "method": method,
        **record,
        "support_text_pairs": len(text_pairs),
        "pairs_retexted": retexted,
        "pair_folders": [Path(f).name for f in pair_folders],
        "support_folders": [Path(f).name for f in support_folders],
    }
    return derive_bundle(
        base_dir,
        out,
        HeadSpec(method=method, dim=cfg.dim),
        (model.tensors(), digest, record),
        image_preprocess=pre,
        text_preprocess=text_pre,
    )


def reproduce_head(
    name: str,
    data_root: Path,
    out: Path,
    *,
    base_dir: Path,
    cache_dir: Path | None = None,
    progress: Progress = no_progress,
    epoch_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[ShippedHead, ShippedHead]:
    """Retrain the head shipped as ``name`` from its recipe on the datasets under ``data_root``
    and write it to ``out`` the way it was shipped; return (shipped, reproduced) records. The two
    ``weights_sha256`` are equal when the data, the code and the training defaults are.

    Raises:
        BundleFormatError: no such shipped head, or ``base_dir`` reads other encoders.
        UsageError: a dataset of the recipe is missing under ``data_root``.
    """
    import tempfile

    from models.exceptions import UsageError
    from models.shipped import read_shipped_head, write_shipped_head

    shipped = read_shipped_head(name)
    recipe = shipped.recipe
    folders = {n: data_root / n for n in (*recipe.pairs, *recipe.support)}
    missing = sorted(n for n, f in folders.items() if not f.is_dir())
    if missing:
        raise UsageError(f"{data_root}: missing dataset folders {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="crossroute-head-") as tmp:
        trained = Path(tmp) / "bundle"
        manifest = train_bundle(
            base_dir, [folders[n] for n in recipe.pairs], trained, method=recipe.method,
            support_folders=[folders[n] for n in recipe.support], cache_dir=cache_dir,
            progress=progress, epoch_progress=epoch_progress,
        )  # fmt: skip
        head = write_shipped_head(
            trained, manifest, out, name=name, recipe=recipe,
            dev_metrics=shipped.dev_metrics, calibration=shipped.calibration,
            storage=shipped.storage,
        )  # fmt: skip
    return shipped, head
