"""The retrieval backends of ``crossroute eval --index NAME``, registered by name.

``exact`` (brute-force cosine in memory, :func:`models.eval.run.evaluate`) is this package's. The
entry module (``streams.main``) registers the others explicitly (``redis``, from ``router.cli``:
retrieval through a real index), so the command lives with the evaluation while ``models`` imports
nothing above it. A backend is a factory: the command enters it once (it reads its settings and
opens its connections there), evaluates one or more bundles with what it yields, and leaves it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

__all__ = ["Evaluator", "EvaluatorFactory", "evaluators", "register_evaluator"]

Evaluator = Callable[..., dict[str, Any]]
"""``evaluator(dataset, embedder, *, progress, **options) → report``, the options of
:func:`models.eval.run.evaluate` (``ks``, ``threshold``, ``exemplars``, ``escalated``,
``exemplar_folds``, ``grouped``, ``human_exemplars``, ``exemplar_rule``)."""
EvaluatorFactory = Callable[[], AbstractContextManager[Evaluator]]
"""Sets a backend up for one command (settings, connections) and yields its evaluator."""


def _exact(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from models.eval.run import evaluate

    return evaluate(*args, **kwargs)


_EVALUATORS: dict[str, EvaluatorFactory] = {"exact": lambda: nullcontext(_exact)}


def register_evaluator(name: str, factory: EvaluatorFactory) -> None:
    """Offer another retrieval backend to ``crossroute eval --index NAME``."""
    _EVALUATORS[name] = factory


def evaluators() -> dict[str, EvaluatorFactory]:
    """The registered retrieval backends by name (``exact`` always)."""
    return dict(_EVALUATORS)
