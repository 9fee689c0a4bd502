"""Answers to the human queue, published to Kafka: the API's :class:`~router.feedback.FeedbackSink`.

An agent answers a queued ticket in the console (``POST /v1/queue/{ticket_id}/answer``); this
publishes the ``feedback.recorded`` event the worker learns from, keyed like every event of that
ticket, and returns once the broker confirmed it (idempotent producer, ``acks=all``). The worker
then takes the ticket out of the queue and, for ``resolved``, indexes it as an exemplar of the
article or policy, so the next similar ticket is routed there.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any, Literal

from router.exceptions import FeedbackError
from router.feedback import LoggedTicket
from streams.events import FeedbackRecorded
from streams.producer import Publisher
from streams.settings import TopicSettings

__all__ = ["KafkaAnswers"]


class KafkaAnswers:
    """Publishes answers as feedback events (thread-safe: the API answers from its thread pool).

    Args:
        config: confluent-kafka config of the cluster (``streams.connections.kafka_config``).
        topics: topic names (the ``feedback`` topic).
        timeout_s: how long an answer waits for the broker's confirmation.
    """

    def __init__(self, config: dict[str, Any], topics: TopicSettings, timeout_s: float = 15.0):
        self.config = config
        self.topics = topics
        self.timeout_s = timeout_s
        self._publisher: Publisher | None = None  # made at the first answer: an API that is
        # never asked one does not connect to Kafka (nor log about a broker it cannot reach)
        self._lock = threading.Lock()

    def answer(self, ticket: LoggedTicket, doc_id: str | None) -> str:
        action: Literal["resolved", "escalated"] = "resolved" if doc_id else "escalated"
        event = FeedbackRecorded(
            tenant_id=ticket.tenant,
            ticket_id=ticket.ticket_id,
            space_id=ticket.space_id,
            action=action,
            doc_id=doc_id,
            occurred_at=datetime.now(UTC),
        )
        with self._lock:
            if self._publisher is None:
                self._publisher = Publisher(self.config, self.topics)
            report = self._publisher.publish([event], timeout_s=self.timeout_s)
        if report.failed or report.delivered != 1:
            reasons = "; ".join(error for _, error in report.failed) or "not confirmed"
            raise FeedbackError(f"feedback for {ticket.tenant}/{ticket.ticket_id}: {reasons}")
        return action
