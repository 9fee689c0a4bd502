"""The human queue's answers when the broker does not confirm (the published path runs on the real
broker in tests/integration/streams/test_console_ops.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from router.exceptions import FeedbackError
from router.feedback import LoggedTicket
from streams.answers import KafkaAnswers
from streams.settings import TopicSettings


def test_an_answer_the_broker_does_not_confirm_is_an_error_and_nothing_connects_before() -> None:
    closed = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0}  # nothing listens on port 1
    answers = KafkaAnswers(closed, TopicSettings(), timeout_s=1.0)
    assert answers._publisher is None  # an API never asked for an answer never connects
    ticket = LoggedTicket(tenant="acme", ticket_id="t-1", text="?", locale="en", space_id="sp-1",
                          queue="human", decided_at=datetime.now(UTC))  # fmt: skip
    with pytest.raises(FeedbackError, match="acme/t-1: 1 message"):
        answers.answer(ticket, "kb-1")
