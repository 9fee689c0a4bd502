"""What a tower loader returns: an exportable torch module plus what the bundle needs with it.

Shared by :mod:`models.export.towers` (the loaders by family) and :mod:`models.export.openclip`
(the open_clip family's loaders), so that neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

__all__ = ["ImageTower", "TextTower"]


@dataclass
class TextTower:
    """An exportable text module plus what the bundle needs with it."""

    module: nn.Module
    input_names: tuple[str, ...]
    tokenizer_file: Path
    source: dict[str, str]


@dataclass
class ImageTower:
    """An exportable image module plus its provenance.

    ``stages_dim`` > 0: the module returns a second output, the intermediate-stage features.
    """

    module: nn.Module
    source: dict[str, str]
    stages_dim: int = 0
