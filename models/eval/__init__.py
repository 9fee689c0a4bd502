"""Offline evaluation (``crossroute eval``): the contract in ``../shared/docs/EVAL.md``."""

from __future__ import annotations
