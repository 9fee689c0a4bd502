"""Text in screenshots: PP-OCRv4 detection + recognition (rapidocr-onnxruntime), torch-free.

The detector/recogniser ONNX files are copied into the bundle and hashed like every other model file;
the engine is pointed at those copies explicitly, never at whatever the installed package carries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from models.config import OcrSpec
from models.exceptions import MissingDependencyError

__all__ = ["OcrEngine"]


class OcrEngine:
    """Read the text of an RGB image, lines in reading order.

    Args:
        models: role (``det``, ``rec``, optional ``cls``) → ONNX path.
        spec: detection/recognition settings.
        threads: intra-op threads of the three onnxruntime sessions.
    """

    def __init__(self, models: dict[str, Path], spec: OcrSpec, threads: int | None = None) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:  # pragma: no cover - a core dependency
            raise MissingDependencyError(
                "OCR needs rapidocr-onnxruntime: pip install crossroute"
            ) from e
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self.spec = spec
        kwargs: dict[str, object] = {
            "det_model_path": str(models["det"]),
            "rec_model_path": str(models["rec"]),
            "det_limit_type": "max",
            "det_limit_side_len": spec.det_limit_side_len,
            "det_box_thresh": spec.box_thresh,
            "det_unclip_ratio": spec.unclip_ratio,
            "text_score": spec.text_score,
            "use_cls": spec.use_angle_cls,
            "print_verbose": False,
        }
        if "cls" in models:
            kwargs["cls_model_path"] = str(models["cls"])
        if threads is not None:
            kwargs["intra_op_num_threads"] = threads
            kwargs["inter_op_num_threads"] = 1
        self._engine = RapidOCR(**kwargs)

    def read(self, img: Image.Image) -> str:
        """The recognised lines joined by newlines, at most ``spec.max_chars`` characters."""
        bgr = np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])
        result, _ = self._engine(bgr, use_cls=self.spec.use_angle_cls)
        if not result:
            return ""
        lines = [
            str(text).strip() for _, text, score in result if float(score) >= self.spec.text_score
        ]
        return "\n".join(line for line in lines if line)[: self.spec.max_chars]
