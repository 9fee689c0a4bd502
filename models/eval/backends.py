"""The retrieval backends of ``crossroute eval --index NAME``, registered by name.

``exact`` (brute-force cosine in memory, :func:`models.eval.run.evaluate`) is this package's;
higher layers register theirs (``router`` adds ``redis``: retrieval through a real index), so the
command lives with the evaluation while ``models`` imports nothing above it. Registering is cheap:
a backend imports what it needs when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["Evaluator", "evaluators", "register_evaluator"]

Evaluator = Callable[..., dict[str, Any]]
"""``evaluator(dataset, embedder, *, progress, **options) → report``, the options of
:func:`models.eval.run.evaluate` (``ks``, ``threshold``, ``exemplars``, ``exemplar_folds``)."""


def _exact(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from models.eval.run import evaluate

    return evaluate(*args, **kwargs)


_EVALUATORS: dict[str, Evaluator] = {"exact": _exact}


def register_evaluator(name: str, evaluator: Evaluator) -> None:
    """Offer another retrieval backend to ``crossroute eval --index NAME``."""
    _EVALUATORS[name] = evaluator


def evaluators() -> dict[str, Evaluator]:
    """The registered retrieval backends by name (``exact`` always)."""
    return dict(_EVALUATORS)
