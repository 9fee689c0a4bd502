"""onnxruntime sessions: provider selection (CUDA when available, else CPU) and graph optimisation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnxruntime as ort

__all__ = ["Providers", "create_session", "resolve_providers"]

Providers = Literal["auto", "cpu", "cuda"]


def resolve_providers(providers: Providers = "auto") -> list[str]:
    """onnxruntime execution providers for a choice: ``auto`` takes CUDA when this build has it."""
    available = set(ort.get_available_providers())
    if providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "cuda" or (providers == "auto" and "CUDAExecutionProvider" in available):
        if "CUDAExecutionProvider" not in available:
            from models.exceptions import ModelsError

            raise ModelsError(
                "CUDA requested but this onnxruntime has no CUDA provider: "
                "pip install 'crossroute[gpu]' (onnxruntime-gpu)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(
    path: Path, *, providers: Providers = "auto", threads: int | None = None
) -> ort.InferenceSession:
    """An inference session with graph optimisation level ALL.

    Args:
        path: the ``.onnx`` file.
        providers: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        threads: intra-op threads; ``None`` lets onnxruntime use every core.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: no per-node warnings in our logs
    return ort.InferenceSession(
        str(path), sess_options=options, providers=resolve_providers(providers)
    )
