"""The embedded dev stack behind ``crossroute stack up|down|status``: real Kafka + Redis Stack."""

from __future__ import annotations

from streams.devstack.stack import DevStack, ServiceName, ServiceStatus

__all__ = ["DevStack", "ServiceName", "ServiceStatus"]
