"""``crossroute models build``: export the encoders of a spec into a verified, reproducible bundle."""

from __future__ import annotations

import importlib.metadata
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from models.bundle import (
    EncoderFiles,
    Manifest,
    compute_space_id,
    hash_files,
    staged_bundle,
    write_manifest,
)
from models.config import BundleSpec
from models.embedder import Embedder
from models.exceptions import BundleIntegrityError
from models.export import require_torch
from models.progress import Progress, no_progress
from models.shipped import WEIGHTS_FILE, check_fits, load_shipped_head, projection_info

__all__ = ["FIDELITY_TEXTS", "build_bundle"]


# Fixed, project-written sentences on which an int8 text encoder's fidelity is measured at build time.
FIDELITY_TEXTS = (
    "how do I reset my password",
    "password reset instructions",
    "my card was charged twice for the same order",
    "refund for a damaged item that arrived broken",
    "the sole of my running shoe came off after two weeks",
    "black running shoe",
    "black walking shoe",
    "red cotton t-shirt for men",
    "women's blue denim jacket with pockets",
    "Error 504: payment gateway timeout",
    "the app crashes when I upload a photo",
    "can I return shoes I have worn outside",
    "warranty coverage for electronics bought abroad",
    "where is my parcel, tracking has not updated in five days",
    "change the delivery address of an order",
    "cancel my subscription and delete my account",
    "the zipper of the backpack broke",
    "lost my card, please block it",
    "exchange rate applied to a foreign transfer",
    "screen flickers after the latest update",
    "size chart for kids sandals",
    "is this watch waterproof",
    "I was charged a fee for a cash withdrawal",
    "the discount code does not work at checkout",
    "how long does a refund take to reach my bank",
    "product arrived in the wrong colour",
    "warranty claim for a laptop battery that no longer charges",
    "login page says my account is locked",
    "two-factor authentication code never arrives",
    "the invoice shows the wrong VAT number",
    "gift card balance",
    "a",
)

_OCR_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def _versions(names: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _export_text(spec: BundleSpec, work: Path, progress: Progress) -> EncoderFiles:
    import torch

    from models.export.onnx_export import cosine_rows, export_module, quantize_int8
    from models.export.towers import load_text_tower
    from models.preprocess import TextTokenizer

    progress(f"exporting text encoder {spec.text.name}")
    tower = load_text_tower(spec.text)
    shutil.copyfile(tower.tokenizer_file, work / "tokenizer.json")
    tokenizer = TextTokenizer(work / "tokenizer.json", spec.text.preprocess)
    feed = tokenizer(["an example sentence for export", "two words"])
    example = [torch.from_numpy(feed[name]) for name in tower.input_names]
    dynamic = {name: {0: "batch", 1: "seq"} for name in tower.input_names}
    export_module(
        tower.module, example, work / "text.onnx",
        input_names=tower.input_names, output_names=("text_embeds",), dynamic=dynamic, opset=spec.opset,
    )  # fmt: skip
    quantization = None
    onnx_file = "text.onnx"
    if spec.text.int8:
        import onnxruntime as ort

        progress("quantising the text encoder to per-channel int8")
        quantize_int8(work / "text.onnx", work / "text.int8.onnx")
        feed = tokenizer(list(FIDELITY_TEXTS))
        inputs = {name: feed[name] for name in tower.input_names}
        fp32 = ort.InferenceSession(str(work / "text.onnx"), providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(
            str(work / "text.int8.onnx"), providers=["CPUExecutionProvider"]
        )
        cos = cosine_rows(fp32.run(None, inputs)[0], int8.run(None, inputs)[0])
        quantization = {
            "method": "onnxruntime dynamic int8, per-channel weights",
            "fidelity_cosine_vs_fp32_min": round(float(cos.min()), 6),
            "fidelity_cosine_vs_fp32_mean": round(float(np.mean(cos)), 6),
            "fidelity_texts": len(FIDELITY_TEXTS),
        }
        (work / "text.onnx").unlink()
        onnx_file = "text.int8.onnx"
    return EncoderFiles(
        onnx=onnx_file,
        inputs=tower.input_names,
        output="text_embeds",
        dim=spec.text.dim,
        source=tower.source,
        tokenizer="tokenizer.json",
        quantization=quantization,
    )


def _export_image(spec: BundleSpec, work: Path, progress: Progress) -> EncoderFiles:
    import torch

    from models.export.onnx_export import export_module
    from models.export.towers import load_image_tower

    progress(f"exporting image encoder {spec.image.name}")
    tower = load_image_tower(spec.image)
    size = spec.image.preprocess.size
    example = [torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))]
    outputs = ("image_feats", "stage_feats") if tower.stages_dim else ("image_feats",)
    export_module(
        tower.module, example, work / "image.onnx",
        input_names=("pixel_values",), output_names=outputs,
        dynamic={"pixel_values": {0: "batch"}}, opset=spec.opset,
    )  # fmt: skip
    return EncoderFiles(
        onnx="image.onnx",
        inputs=("pixel_values",),
        output="image_feats",
        dim=spec.image.dim,
        source=tower.source,
        stages_output="stage_feats" if tower.stages_dim else None,
        stages_dim=tower.stages_dim or None,
    )


def _copy_ocr(spec: BundleSpec, work: Path, progress: Progress) -> dict[str, str] | None:
    if spec.ocr is None:
        return None
    progress(f"adding OCR models {spec.ocr.name}")
    models = resources.files("rapidocr_onnxruntime").joinpath("models")
    (work / "ocr").mkdir()
    roles = ["det", "rec"] + (["cls"] if spec.ocr.use_angle_cls else [])
    out = {}
    for role in roles:
        (work / "ocr" / f"{role}.onnx").write_bytes(models.joinpath(_OCR_FILES[role]).read_bytes())
        out[role] = f"ocr/{role}.onnx"
    return out


def build_bundle(spec: BundleSpec, out: Path, *, progress: Progress = no_progress) -> Manifest:
    """Export every encoder of ``spec`` into ``out`` (replaced atomically) and write its manifest.

    The head is the spec's: ``naive`` (no weights), or a head shipped in the package
    (``head.shipped``, :mod:`models.shipped`), whose weights are copied in verbatim after their
    sha256 and their fit to the encoders are checked; the finished bundle is opened once before it
    replaces ``out``, so a head that does not fit its encoders never lands. Heads fitted by
    ``crossroute train`` are added by :func:`models.train.run.derive_bundle`, which reuses these
    encoder files.

    Args:
        spec: the bundle spec.
        out: the bundle folder to create or replace.
        progress: called with a line before each step.

    Returns:
        The manifest written.

    Raises:
        BundleFormatError: the shipped head is unknown or does not fit the spec's encoders.
        BundleIntegrityError: the shipped head's weights differ from their recorded sha256.
    """
    require_torch()
    shipped = None
    if spec.head.shipped is not None:  # checked before the minutes of export, and again after
        shipped, weights = load_shipped_head(spec.head.shipped)
        check_fits(shipped, spec)
    with staged_bundle(out) as work:
        text = _export_text(spec, work, progress)
        image = _export_image(spec, work, progress)
        ocr = _copy_ocr(spec, work, progress)
        projection = None
        if shipped is not None:
            progress(f"adding the shipped head {shipped.name} ({shipped.method}, {shipped.dim}-d)")
            shutil.copyfile(weights, work / WEIGHTS_FILE)
            projection = projection_info(shipped)
        progress("hashing files and writing the manifest")
        files = hash_files(work)
        if projection is not None and files[WEIGHTS_FILE].sha256 != projection.weights_sha256:
            raise BundleIntegrityError(f"{weights} changed while the bundle was being built")
        manifest = Manifest(
            space_id=compute_space_id(spec, files, projection),
            spec=spec,
            dim=spec.dim,
            opset=spec.opset,
            text=text,
            image=image,
            ocr=ocr,
            libraries=_versions(
                (
                    "torch",
                    "onnx",
                    "onnxscript",
                    "onnxruntime",
                    "tokenizers",
                    "timm",
                    "transformers",
                    "open_clip_torch",
                    "rapidocr-onnxruntime",
                    "numpy",
                    "pillow",
                )
            ),
            files=files,
            projection=projection,
        )
        write_manifest(work, manifest)
        Embedder(work, manifest, providers="cpu")  # the head fits the encoders it will read
    return manifest
