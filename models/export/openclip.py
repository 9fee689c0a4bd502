"""open_clip towers from a config and a LOCAL checkpoint (no hub), and a torch-free CLIP tokenizer.

open_clip's own tokenizer imports torch, so the bundle carries a ``tokenizer.json`` for the
``tokenizers`` library built from the same BPE file (``bpe_simple_vocab_16e6.txt.gz``, shipped in the
open_clip package): the same vocabulary and merges, the same split pattern, lower-casing, start/end
tokens and truncation to the context length with the end token kept. (open_clip also runs ftfy's
mojibake repair; serving does not, which only matters for broken Unicode.) A test holds the ids equal.

The text tower is re-implemented around open_clip's modules so the sequence axis can be dynamic:
``encode_text`` adds the full 77-position embedding and mask, which pins the exported sequence to 77.
Slicing both to the input length gives identical outputs (the mask is causal and pooling takes the
end-of-text position).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from models.bundle import sha256_file
from models.config import ImageEncoderSpec, OpenClipSource, TextEncoderSpec
from models.exceptions import ModelsError
from models.export.tower_types import ImageTower, TextTower

__all__ = [
    "build_clip_tokenizer_json",
    "load_open_clip_image",
    "load_open_clip_model",
    "load_open_clip_text",
]

_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SOT, EOT = "<start_of_text>", "<end_of_text>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable-unicode table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def build_clip_tokenizer_json(out: Path, context_length: int) -> None:
    """Write a ``tokenizers`` JSON equivalent to open_clip's ``SimpleTokenizer``."""
    from open_clip.tokenizer import default_bpe
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab_list = list(_bytes_to_unicode().values())
    vocab_list += [v + "</w>" for v in vocab_list]
    vocab_list += ["".join(m) for m in merges]
    vocab_list += [SOT, EOT]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(a, b) for a, b in merges],
            end_of_word_suffix="</w>",
            continuing_subword_prefix="",
            fuse_unk=False,
            unk_token=None,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
            normalizers.Lowercase(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.add_special_tokens([SOT, EOT])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    tok.decoder = decoders.ByteLevel()
    tok.enable_truncation(max_length=context_length)
    out.write_text(tok.to_str(pretty=False))


def load_open_clip_model(source: OpenClipSource) -> nn.Module:
    """Create the open_clip model and load the local checkpoint strictly (never a hub download)."""
    import open_clip

    if not source.checkpoint.is_file():
        raise ModelsError(
            f"open_clip checkpoint {source.checkpoint} not found (a local file is required)"
        )
    if source.model_cfg is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / f"{source.model_name}.json"
            cfg_path.write_text(json.dumps(source.model_cfg))
            open_clip.add_model_config(cfg_path)
    if source.model_name not in open_clip.list_models():
        raise ModelsError(f"unknown open_clip model {source.model_name!r} (give model_cfg inline)")
    model: nn.Module = open_clip.create_model(source.model_name, pretrained=str(source.checkpoint))
    return model.eval()


def _source_info(source: OpenClipSource) -> dict[str, str]:
    return {
        "package": "open_clip_torch",
        "version": importlib.metadata.version("open_clip_torch"),
        "model_name": source.model_name,
        "checkpoint_sha256": sha256_file(source.checkpoint),
    }


class _ClipText(nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        from open_clip.transformer import text_global_pool

        m = self.clip
        seq = input_ids.shape[1]
        x = m.token_embedding(input_ids) + m.positional_embedding[:seq]
        x = m.transformer(x, attn_mask=m.attn_mask[:seq, :seq])
        x = m.ln_final(x)
        x = text_global_pool(
            x, input_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None)
        )
        x = (
            m.text_projection(x)
            if isinstance(m.text_projection, nn.Linear)
            else x @ m.text_projection
        )
        return F.normalize(x, dim=-1)


class _ClipImage(nn.Module):
    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.clip.encode_image(pixel_values, normalize=True)
        return out


def _source(spec: TextEncoderSpec | ImageEncoderSpec) -> OpenClipSource:
    if spec.open_clip is None:
        raise ModelsError(
            f"{spec.kind} encoder {spec.name}: family open_clip needs an 'open_clip' section"
        )
    return spec.open_clip


def load_open_clip_text(spec: TextEncoderSpec) -> TextTower:
    """The text tower (input ``input_ids`` only) and a generated ``tokenizer.json``."""
    source = _source(spec)
    module = _ClipText(load_open_clip_model(source)).eval()
    tok_file = Path(tempfile.mkdtemp(prefix="crossroute-clip-tok-")) / "tokenizer.json"
    build_clip_tokenizer_json(tok_file, spec.preprocess.max_length)
    return TextTower(module, ("input_ids",), tok_file, _source_info(source))


def load_open_clip_image(spec: ImageEncoderSpec) -> ImageTower:
    """The image tower."""
    source = _source(spec)
    return ImageTower(_ClipImage(load_open_clip_model(source)).eval(), _source_info(source))
