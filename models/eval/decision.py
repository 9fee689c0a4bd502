"""The routing decision: one rule for the offline evaluator and the product router.

A ticket is scored against every real target (an article or a policy) and against the **human
queue**, a pseudo-target whose exemplars are escalated (out-of-scope) tickets:

- a real target's score, by the exemplar rule (:data:`ExemplarRule`):

  - ``max``: the max of its own cosine and its exemplars' cosines (a target without exemplars: its
    own cosine);
  - ``prototype``: the cosine with the target's prototype, the normalised sum of its own vector and
    its exemplars' vectors (:func:`prototypes`; a target without exemplars: its own vector);

- the human queue's score: the max of its exemplars' cosines (``-inf`` without any);
- the ticket **abstains** (goes to the human queue) when the human queue's score is greater than
  the best real target's, whatever the threshold; otherwise when the best real target's score is
  below the threshold (:func:`abstains`).

:func:`routing_score` folds the rule into one number per ticket, so that one comparison decides and
a threshold can be fitted on it: ``routing_score < threshold`` exactly when the ticket abstains, for
any threshold above :data:`HUMAN_WINS` (every cosine is).

``models`` never imports ``router``; the router imports these functions to decide as the evaluator
measures.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from models.projection import l2_normalize

__all__ = [
    "EXEMPLAR_RULES",
    "HUMAN_WINS",
    "ExemplarRule",
    "abstains",
    "human_scores",
    "prototypes",
    "routing_score",
]

ExemplarRule = Literal["max", "prototype"]
EXEMPLAR_RULES: tuple[ExemplarRule, ...] = ("max", "prototype")
HUMAN_WINS = -2.0
"""The routing score of a ticket the human queue wins: below every cosine, so below any threshold."""


def human_scores(query_vecs: np.ndarray, human_vecs: np.ndarray) -> np.ndarray:
    """The human queue's score of each query: the max cosine with its exemplars (``-inf`` when it
    has none). ``query_vecs`` (n, dim) and ``human_vecs`` (m, dim), unit norm."""
    if len(human_vecs) == 0:
        return np.full(len(query_vecs), -np.inf)
    out: np.ndarray = (query_vecs @ human_vecs.T).max(axis=1).astype(np.float64)
    return out


def routing_score(best: np.ndarray | float, human: np.ndarray | float) -> np.ndarray:
    """The best real target's score, or :data:`HUMAN_WINS` where the human queue's score is greater.

    Abstaining below a threshold on this score is :func:`abstains`.
    """
    best_a, human_a = np.asarray(best, dtype=np.float64), np.asarray(human, dtype=np.float64)
    return np.where(human_a > best_a, HUMAN_WINS, best_a)


def abstains(
    best: np.ndarray | float, human: np.ndarray | float, threshold: np.ndarray | float
) -> np.ndarray:
    """Whether each ticket goes to the human queue: the human queue's score beats the best real
    target's, or the best real target's score is below the threshold."""
    best_a = np.asarray(best, dtype=np.float64)
    return (np.asarray(human, dtype=np.float64) > best_a) | (best_a < np.asarray(threshold))


def prototypes(doc_vecs: np.ndarray, ex_vecs: np.ndarray, ex_owner: np.ndarray) -> np.ndarray:
    """Each target's prototype: the normalised sum of its own vector and its exemplars' vectors.

    Args:
        doc_vecs: (n_targets, dim) unit-norm target vectors.
        ex_vecs: (m, dim) unit-norm exemplar vectors.
        ex_owner: (m,) the target index of each exemplar.

    Returns:
        (n_targets, dim) unit-norm prototypes (a target without exemplars keeps its own vector).
    """
    total = doc_vecs.astype(np.float64, copy=True)
    if len(ex_owner):
        np.add.at(total, ex_owner, ex_vecs.astype(np.float64))
    return l2_normalize(total)
