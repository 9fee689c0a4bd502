"""Shared decisions: what the console's "copy link" points at.

``POST /v1/route/explain`` keeps each explained decision (the decision, the ticket's text, the OCR
text and the targets' titles; never the images) under ``{namespace}:decision:{tenant}:{share_id}``
for ``ttl_s`` seconds (7 days by default); ``GET /v1/decisions/{share_id}`` reads it back for a key
of the same tenant. The id is 96 random bits, so a link cannot be guessed, and the tenant is part
of the key, so another tenant's key finds nothing. This is the API's only write: its Redis user is
granted ``SET`` on these keys alone (:func:`router.acl.acl_rules`).
"""

from __future__ import annotations

import secrets

import redis

__all__ = ["SharedDecisions"]

_SHARE_ID_BYTES = 12


class SharedDecisions:
    """Explained decisions in Redis, per tenant, for ``ttl_s`` seconds."""

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int = 7 * 24 * 3600) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.client = client
        self.prefix = f"{namespace}:decision:"
        self.ttl_s = ttl_s

    def key(self, tenant: str, share_id: str) -> str:
        return f"{self.prefix}{tenant}:{share_id}"

    def keep(self, tenant: str, payload: str) -> str:
        """Keep ``payload`` (JSON) for the tenant; returns its share id."""
        share_id = secrets.token_urlsafe(_SHARE_ID_BYTES)
        self.client.set(self.key(tenant, share_id), payload, ex=self.ttl_s)
        return share_id

    def get(self, tenant: str, share_id: str) -> str | None:
        """The payload kept under ``share_id`` for the tenant, or None (unknown, expired, another
        tenant's, or not an id this class makes)."""
        if len(share_id) != 16 or not all(c.isalnum() or c in "-_" for c in share_id):
            return None
        raw = self.client.get(self.key(tenant, share_id))
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)
