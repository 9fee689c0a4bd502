"""``crossroute bench encoders``: ONNX serving path vs the torch reference, texts/s and images/s.

Throughput is measured at batch 1 and batch 32 on real inputs, with warm-up, in one process, so the
ONNX/torch *ratios* are comparable; absolute numbers depend on the machine (and are only quoted for a
GPU). Both sides get the same preprocessed tensors for the encoder-only numbers; the serving numbers
add decoding/preprocessing (images) and tokenization (texts).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from models.embedder import Embedder
from models.exceptions import UsageError
from models.preprocess import decode_image, image_to_array, normalize_text

__all__ = ["SCHEMA_VERSION", "bench_encoders", "bench_inputs", "run_context", "write_bench"]

SCHEMA_VERSION = 1
"""Version of the ``crossroute bench`` JSON layout (docs/performance.md); bumped when a key moves."""


def run_context(embedder: Embedder, threads: int | None = None) -> dict[str, Any]:
    """What every bench report records of its run: schema, date, machine, versions, model."""
    import importlib.metadata
    from datetime import UTC, datetime

    import onnxruntime

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "schema_version": SCHEMA_VERSION,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "threads": threads or os.cpu_count(),
        },
        "versions": {
            name: version(name)
            for name in ("crossroute", "onnxruntime", "numpy", "redis", "confluent-kafka",
                         "faust-streaming", "torch", "redisvl")
        },
        "onnxruntime_providers": list(onnxruntime.get_available_providers()),
        "model": {"space_id": embedder.space_id, "bundle": str(embedder.bundle_dir)},
    }  # fmt: skip


def write_bench(
    name: str,
    embedder: Embedder,
    quick: bool,
    json_out: Path | None,
    report: dict[str, Any],
    **extra: Any,
) -> Path:
    """Write a bench report with its run context to ``json_out`` (default ``bench/NAME.json``,
    ``bench/NAME-quick.json`` with ``--quick``) under the key ``name``; return the path."""
    path = json_out or Path(f"bench/{name}-quick.json" if quick else f"bench/{name}.json")
    full = {"bench": name, **run_context(embedder), "quick": quick, **extra, name: report}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(full, indent=2) + "\n")
    return path


_T = TypeVar("_T")


def _take(items: Sequence[_T], n: int) -> list[_T]:
    """The first ``n`` items, cycling when there are fewer."""
    return [items[i % len(items)] for i in range(n)]


def _take_rows(arr: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(arr[np.arange(n) % len(arr)])


def _rate(fn: Callable[[], object], items: int, min_seconds: float) -> float:
    fn()  # warm-up
    done, start = 0, time.perf_counter()
    while True:
        fn()
        done += items
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def bench_encoders(
    embedder: Embedder,
    texts: Sequence[str],
    image_paths: Sequence[Path],
    *,
    batch_sizes: Sequence[int] = (1, 32),
    min_seconds: float = 3.0,
    rounds: int = 3,
    torch_reference: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Measure items/s for every (modality, stage, batch size, engine) and return a JSON report.

    Every point is measured ``rounds`` times, the engines interleaved round by round, and the median
    kept: background load then hits both engines alike and the ratios stay meaningful.
    """
    spec = embedder.manifest.spec
    clean = [normalize_text(t, spec.text.preprocess) for t in texts if t.strip()]
    images = [decode_image(p, spec.image.preprocess, str(p)) for p in image_paths]
    arrays = np.stack([image_to_array(im, spec.image.preprocess) for im in images])
    # (modality, engine, stage, batch) -> callable processing `batch` items
    points: dict[tuple[str, str, str, int], Callable[[], object]] = {}
    for b in batch_sizes:
        tb, ib, pb = _take(clean, b), _take_rows(arrays, b), _take(list(image_paths), b)
        points["text", "onnxruntime", "encoder+tokenizer", b] = partial(
            embedder.text_features, tb, batch_size=b
        )
        points["image", "onnxruntime", "encoder", b] = partial(
            embedder.image_features, ib, batch_size=b
        )
        points["image", "onnxruntime", "decode+preprocess+encoder", b] = partial(
            embedder.embed_images, pb, batch_size=b
        )

    torch_info: dict[str, Any] = {"available": False}
    if torch_reference:
        try:
            import torch

            from models.export.towers import load_image_tower, load_text_tower
            from models.preprocess import TextTokenizer
        except ImportError:
            torch_info = {"available": False, "reason": "torch not installed (crossroute[train])"}
        else:
            if threads is not None:
                torch.set_num_threads(threads)
            text_tower = load_text_tower(spec.text)
            image_module = load_image_tower(spec.image).module
            tokenizer = TextTokenizer(
                embedder.bundle_dir / (embedder.manifest.text.tokenizer or ""), spec.text.preprocess
            )
            torch_info = {
                "available": True,
                "version": torch.__version__,
                "threads": torch.get_num_threads(),
            }

            def run_text(batch: list[str]) -> object:
                feed = tokenizer(batch)
                with torch.inference_mode():
                    return text_tower.module(
                        *[torch.from_numpy(feed[n]) for n in text_tower.input_names]
                    )

            def run_image(x: torch.Tensor) -> object:
                with torch.inference_mode():
                    return image_module(x)

            for b in batch_sizes:
                points["text", "torch", "encoder+tokenizer", b] = partial(run_text, _take(clean, b))
                tensor = torch.from_numpy(_take_rows(arrays, b))
                points["image", "torch", "encoder", b] = partial(run_image, tensor)

    samples: dict[tuple[str, str, str, int], list[float]] = {key: [] for key in points}
    for _ in range(rounds):
        for key, fn in points.items():
            samples[key].append(_rate(fn, key[3], min_seconds / rounds))
    rate = {key: float(np.median(values)) for key, values in samples.items()}
    results: list[dict[str, Any]] = [
        {
            "modality": modality,
            "engine": engine,
            "stage": stage,
            "batch": batch,
            "items_per_s": round(rate[modality, engine, stage, batch], 2),
            "rounds": [round(x, 2) for x in samples[modality, engine, stage, batch]],
        }
        for modality, engine, stage, batch in points
    ]
    ratios = {
        f"{modality}@{batch}": round(
            rate[modality, engine, stage, batch] / rate[modality, "torch", stage, batch], 2
        )
        for (modality, engine, stage, batch) in rate
        if engine == "onnxruntime" and (modality, "torch", stage, batch) in rate
    }
    import onnxruntime

    return {
        "bench": "encoders",
        "space_id": embedder.space_id,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "onnxruntime": {
            "version": onnxruntime.__version__,
            "providers": embedder.providers,
            "threads": threads,
        },
        "torch": torch_info,
        "inputs": {
            "texts": len(clean),
            "images": len(images),
            "min_seconds_per_point": min_seconds,
        },
        "int8_text": spec.text.int8,
        "results": results,
        "onnx_over_torch": ratios,
    }


def bench_inputs(data: Path) -> tuple[list[str], list[Path]]:
    """Up to 256 query texts and 64 query images from the datasets under ``data`` (EVAL.md layout).

    Raises:
        UsageError: ``data`` is not a folder, or holds no queries with both texts and images.
    """
    if not data.is_dir():
        raise UsageError(f"--data {data} is not a folder")
    texts: list[str] = []
    images: list[Path] = []
    for queries in sorted(data.glob("*/queries.jsonl")):
        for line in queries.read_text().splitlines()[:64]:
            row = json.loads(line)
            if row.get("text"):
                texts.append(row["text"])
            if row.get("image"):
                images.append(queries.parent / row["image"])
    if not texts or not images:
        raise UsageError(f"--data {data} holds no queries with texts and images")
    return texts[:256], images[:64]
