"""Model bundles: a folder of ONNX files, tokenizer, OCR models and weights, described by a manifest.

``manifest.json`` records the spec (encoders, preprocessing, head), the sha256 of every file, the
versions of the libraries that built it, and the **space id**: a digest of every input that changes a
vector (file hashes, preprocessing, head, dims, metric, projection weights and training-data digest;
not labels or timestamps). Vectors of different spaces never meet. Loading verifies every hash and
refuses a tampered, partial or padded bundle.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.config import BundleSpec, canonical_json
from models.exceptions import BundleFormatError, BundleIntegrityError

__all__ = [
    "MANIFEST",
    "EncoderFiles",
    "FileEntry",
    "Manifest",
    "ProjectionInfo",
    "compute_space_id",
    "file_entry",
    "hash_files",
    "load_manifest",
    "sha256_file",
    "staged_bundle",
    "write_manifest",
]

MANIFEST = "manifest.json"
FORMAT: Literal["crossroute.bundle/1"] = "crossroute.bundle/1"
_FROZEN = ConfigDict(frozen=True, extra="forbid")


def sha256_file(path: Path) -> str:
    """sha256 hex of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FileEntry(BaseModel):
    """One file of the bundle."""

    model_config = _FROZEN

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)]


def file_entry(path: Path) -> FileEntry:
    """Hash and size of ``path``."""
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


def hash_files(folder: Path) -> dict[str, FileEntry]:
    """Every file below ``folder`` (manifest excluded), by posix relative path, sorted."""
    return {
        p.relative_to(folder).as_posix(): file_entry(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@contextmanager
def staged_bundle(out: Path) -> Iterator[Path]:
    """An empty folder beside ``out`` to write a bundle into.

    When the block succeeds the folder replaces ``out`` by rename (the old bundle is removed); when it
    raises, ``out`` is left as it was and the staging folder is deleted.
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as tmp:
        work = Path(tmp) / "bundle"
        work.mkdir()
        yield work
        if out.exists():
            out.rename(Path(tmp) / "previous")
        work.rename(out)


class EncoderFiles(BaseModel):
    """Where one exported encoder lives in the bundle and how to call it."""

    model_config = _FROZEN

    onnx: str
    inputs: tuple[str, ...]
    output: str
    dim: int
    source: dict[str, str] = Field(default_factory=dict)
    """Where the weights came from: package, version, sha256 of the original weights file."""
    tokenizer: str | None = None
    quantization: dict[str, Any] | None = None
    """For an int8 encoder: method and the fidelity measured against fp32 at build time."""
    stages_output: str | None = None
    """Image encoders: a second output, the pooled intermediate-stage features (``stages_dim`` wide)
    that a spec with ``ImagePreprocess.stages`` appends to the image features."""
    stages_dim: int | None = None


class ProjectionInfo(BaseModel):
    """The trained head: its weights file and what it was trained on."""

    model_config = _FROZEN

    weights: str
    """Bundle-relative path of ``projection.safetensors``."""
    weights_sha256: str
    training_data_digest: str
    """sha256 over the (sorted, canonical) training pairs and their image bytes."""
    training: dict[str, Any] = Field(default_factory=dict)
    """Hyperparameters, seed, stage metrics: recorded, and hashed into the space id."""


class Manifest(BaseModel):
    """The contents of ``manifest.json``."""

    model_config = _FROZEN

    format: Literal["crossroute.bundle/1"] = FORMAT
    space_id: str
    spec: BundleSpec
    dim: int
    dtype: Literal["float32"] = "float32"
    metric: Literal["cosine"] = "cosine"
    normalized: Literal[True] = True
    opset: int
    text: EncoderFiles
    image: EncoderFiles
    ocr: dict[str, str] | None = None
    """OCR model roles (``det``, ``rec``, ``cls``) → bundle-relative paths."""
    projection: ProjectionInfo | None = None
    libraries: dict[str, str]
    files: dict[str, FileEntry]

    def digest(self) -> str:
        """sha256 of the canonical manifest (identifies the exact bundle, not just its space)."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()


def compute_space_id(
    spec: BundleSpec, files: dict[str, FileEntry], projection: ProjectionInfo | None
) -> str:
    """Digest of everything that changes a vector, as ``sp-`` + 20 hex chars.

    In: the spec (encoders, preprocessing, OCR settings, head, dims, metric), the sha256 of every file
    (ONNX graphs, tokenizer, OCR models, projection weights) and the training-data digest. Out: labels
    (the bundle's ``name``/``version``), library versions, and measured numbers (int8 fidelity,
    training metrics), which may differ in the last digit between machines while the files do not.
    """
    payload = {
        "spec": spec.model_dump(mode="json", exclude={"name", "version"}),
        "dim": spec.dim,
        "files": {k: v.sha256 for k, v in sorted(files.items())},
        "projection": None
        if projection is None
        else {
            "weights_sha256": projection.weights_sha256,
            "training_data_digest": projection.training_data_digest,
        },
    }
    return "sp-" + hashlib.sha256(canonical_json(payload)).hexdigest()[:20]


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` (sorted keys, stable bytes)."""
    path = bundle_dir / MANIFEST
    data = manifest.model_dump(mode="json")
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def load_manifest(bundle_dir: Path, *, verify: bool = True) -> Manifest:
    """Read and (by default) verify a bundle.

    Raises:
        BundleFormatError: no manifest, invalid JSON or fields, unsupported format.
        BundleIntegrityError: a listed file is missing or differs, or an unlisted file is present.
    """
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BundleFormatError(
            f"{bundle_dir} is not a model bundle (no {MANIFEST}); build one with `crossroute models build`"
        )
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise BundleFormatError(f"{path}: unreadable manifest: {e}") from e
    if isinstance(raw, dict) and raw.get("format") != FORMAT:
        raise BundleFormatError(
            f"{path}: unsupported bundle format {raw.get('format')!r} (want {FORMAT})"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise BundleFormatError(f"{path}: {loc}: {first['msg']}") from e
    if verify:
        verify_files(bundle_dir, manifest)
    return manifest


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Check every file against the manifest; refuse missing, changed and unexpected files."""
    present = {
        p.relative_to(bundle_dir).as_posix()
        for p in bundle_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }  # not hash_files(): the names are checked before any byte is hashed
    missing = sorted(set(manifest.files) - present)
    if missing:
        raise BundleIntegrityError(f"{bundle_dir}: partial bundle, missing {', '.join(missing)}")
    extra = sorted(present - set(manifest.files))
    if extra:
        raise BundleIntegrityError(f"{bundle_dir}: files not in the manifest: {', '.join(extra)}")
    for rel, entry in sorted(manifest.files.items()):
        actual = sha256_file(bundle_dir / rel)
        if actual != entry.sha256:
            raise BundleIntegrityError(
                f"{bundle_dir}: {rel} was modified (sha256 {actual[:12]}…, manifest says "
                f"{entry.sha256[:12]}…); rebuild the bundle"
            )
    expected = compute_space_id(manifest.spec, manifest.files, manifest.projection)
    if expected != manifest.space_id:
        raise BundleIntegrityError(
            f"{bundle_dir}: space id {manifest.space_id} does not match its contents ({expected})"
        )
