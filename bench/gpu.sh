#!/usr/bin/env bash
# crossroute on a machine with an NVIDIA GPU: the encoders on ONNX Runtime's CUDA provider against
# the CPU provider and the torch reference, then (when Java and Maven are there for the embedded
# Kafka) ingest and routing with the CUDA provider. Prepared for when an accelerator is lent; see
# docs/performance.md ("GPU"). Writes every report under $OUT (default bench/gpu).
#
#   bash bench/gpu.sh            # everything it can do on this machine
#   OUT=/tmp/gpu bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/gpu}
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"

# The serving install with the CUDA build of onnxruntime instead of the CPU one (both provide the
# `onnxruntime` module; they must not be installed together).
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -m pip uninstall -q -y onnxruntime
.venv/bin/python -m pip install -q 'onnxruntime-gpu>=1.18'
.venv/bin/python -c "import onnxruntime as o; p = o.get_available_providers(); print(p); assert 'CUDAExecutionProvider' in p"
CR=.venv/bin/crossroute

[ -f "$HOME/.local/share/crossroute/bundles/default/manifest.json" ] || $CR models build

# 1. Encoders: the same bundle on the CPU provider, on CUDA, and the torch reference (CPU; the
#    torch path on the GPU is measured by the python block below).
CROSSROUTE_MODEL__PROVIDERS=cpu $CR bench encoders --data "$DATA" --out "$OUT/encoders-cpu.json"
CROSSROUTE_MODEL__PROVIDERS=cuda $CR bench encoders --data "$DATA" --no-torch --out "$OUT/encoders-cuda.json"

# 2. torch on the GPU (the export's reference modules), batch 1 and 64, and where image decoding
#    goes once the encoder is fast: Pillow on the CPU vs nvjpeg (torchvision.io.decode_jpeg on cuda).
.venv/bin/python - "$DATA" "$OUT/torch-cuda.json" <<'PY'
import json, sys, time
from pathlib import Path

import torch
from torchvision.io import decode_jpeg

from models.bench import bench_inputs
from models.embedder import Embedder
from models.export.towers import load_image_tower, load_text_tower
from models.preprocess import decode_image, image_to_array
from models.settings import ModelSettings

data, out = Path(sys.argv[1]), Path(sys.argv[2])
embedder = Embedder.from_settings(ModelSettings(providers="cpu"))
spec = embedder.manifest.spec
texts, images = bench_inputs(data)
dev = torch.device("cuda")
text = load_text_tower(spec.text).module.to(dev).eval()
image = load_image_tower(spec.image).module.to(dev).eval()
tok = embedder._tokenizer  # the serving tokenizer: same inputs as ONNX


def rate(fn, items, seconds=3.0):
    fn(); torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(); torch.cuda.synchronize(); n += items
    return n / (time.perf_counter() - start)


report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": []}
arrays = [image_to_array(decode_image(p, spec.image.preprocess, p.name), spec.image.preprocess) for p in images]
with torch.inference_mode():
    for b in (1, 64):
        feed = tok((texts * 64)[:b])
        args = [torch.from_numpy(feed[n]).to(dev) for n in ("input_ids", "attention_mask")]
        report["results"].append({"modality": "text", "batch": b, "items_per_s": rate(lambda: text(*args), b)})
        x = torch.from_numpy(__import__("numpy").stack((arrays * 64)[:b])).to(dev)
        report["results"].append({"modality": "image", "batch": b, "items_per_s": rate(lambda: image(x), b)})
raw = [p.read_bytes() for p in images]
start = time.perf_counter()
for blob, p in zip(raw, images):
    decode_image(blob, spec.image.preprocess, p.name)
report["decode_cpu_pillow_per_s"] = len(raw) / (time.perf_counter() - start)
tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in raw]
decode_jpeg(tensors, device="cuda"); torch.cuda.synchronize()
start = time.perf_counter()
decode_jpeg(tensors, device="cuda"); torch.cuda.synchronize()
report["decode_gpu_nvjpeg_per_s"] = len(raw) / (time.perf_counter() - start)
out.write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report, indent=2))
PY

# 3. The whole system on the GPU provider, when the embedded stack can start here (Java 17+, Maven).
if command -v java >/dev/null && command -v mvn >/dev/null && $CR stack up; then
  export CROSSROUTE_MODEL__PROVIDERS=cuda
  $CR bench ingest --data "$DATA" --json "$OUT/ingest-cuda.json"
  $CR bench route --data "$DATA" --json "$OUT/route-cuda.json"
  $CR bench scale --data "$DATA" --json "$OUT/scale-cuda.json"
  $CR stack down
else
  echo "no Java/Maven or the embedded stack did not start: ingest/route/scale on CUDA skipped" | tee "$OUT/skipped.txt"
fi
ls -l "$OUT"
