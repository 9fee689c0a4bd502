"""Training the alignment head (needs the ``train`` extra): pair curation, features, contrastive
training with mined negatives, baselines, and bundles derived from a base bundle."""

from __future__ import annotations
