"""`crossroute bench encoders` writes a JSON report with every point, ONNX vs torch."""

from __future__ import annotations

import json
from pathlib import Path

from models.embedder import Embedder
from tests.conftest import require_shared_data
from tests.unit.test_cli import run_cli


def test_bench_encoders_cli_writes_json(
    default_bundle: Path, tmp_path: Path, embedder: Embedder
) -> None:
    data = require_shared_data()
    out = tmp_path / "bench.json"
    res = run_cli(
        "bench", "encoders", "--bundle", str(default_bundle), "--data", str(data),
        "--out", str(out), "--seconds", "0.3", "--threads", "2", timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["space_id"] == embedder.space_id
    points = {(r["modality"], r["engine"], r["stage"], r["batch"]) for r in report["results"]}
    for batch in (1, 32):
        assert ("text", "onnxruntime", "encoder+tokenizer", batch) in points
        assert ("text", "torch", "encoder+tokenizer", batch) in points
        assert ("image", "onnxruntime", "encoder", batch) in points
        assert ("image", "torch", "encoder", batch) in points
        assert ("image", "onnxruntime", "decode+preprocess+encoder", batch) in points
    assert all(r["items_per_s"] > 0 for r in report["results"])
    assert set(report["onnx_over_torch"]) == {"text@1", "text@32", "image@1", "image@32"}
