"""What users did with the decisions of each embedding space: outcome counts and rates.

The worker records every routed ticket's decision (:meth:`Outcomes.record_decisions`) and every
feedback event about it (:meth:`Outcomes.record_feedback`). A feedback event is joined to the
decision that caused it by ``(tenant, ticket id)`` and counted for the space that served that
decision. Each is counted once, whatever the replays: a ticket's first decision and each action's
first event per ticket count, later ones are no-ops (one Lua script per event, on the per-ticket
record ``{ns}:outcome:{tenant}:{ticket}``, which expires with the ticket log).

Per space (``{ns}:outcomes:{space_id}``): ``decisions``, ``auto``, ``human`` and one count per
feedback action, plus the sum and count of resolution times (decision → ``resolved``). From them,
:class:`OutcomeCounts` derives the rates the deployment gate compares and Prometheus exports:

- ``auto_route_rate``: auto-routed / decisions;
- ``resolution_rate``: resolved / decisions;
- ``escalation_rate``: escalated / decisions;
- ``reopen_rate``: reopened / resolved;
- ``mean_time_to_resolution_s``.

Per tenant, decisions are also counted in 10-minute buckets (``{ns}:outcomes:tenant:{tenant}:{day}``,
kept 3 days): :meth:`Outcomes.abstention` says how the share sent to the human queue moves, which
the console charts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from router.connection import reply_text

__all__ = [
    "ACTIONS",
    "BUCKET_S",
    "AbstentionBucket",
    "OutcomeCollector",
    "OutcomeCounts",
    "Outcomes",
]

ACTIONS = ("clicked", "resolved", "escalated", "reopened", "wrong_article")

# KEYS[1] ticket record, KEYS[2] the space's counters, KEYS[3] the set of spaces, KEYS[4] the
# tenant's day of decisions; ARGV: space, queue, decided_at_ms, ttl_s, the day's bucket, the day's
# TTL → 1 counted, 0 already known
_DECISION = """
if redis.call('HSETNX', KEYS[1], 'space', ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'queue', ARGV[2], 'decided_ms', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('HINCRBY', KEYS[2], 'decisions', 1)
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], 'd:' .. ARGV[5], 1)
if ARGV[2] == 'human' then redis.call('HINCRBY', KEYS[4], 'h:' .. ARGV[5], 1) end
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[6]))
return 1
"""
BUCKET_S = 600
"""The width of a bucket of :meth:`Outcomes.abstention` (10 minutes)."""
_DAY_S = 24 * 3600
_DAYS_KEPT = 3

# KEYS[1] ticket record; ARGV: namespace prefix of the counters, action, occurred_at_ms
# → the space counted for, '' when the ticket has no decision, '=' when already counted
_FEEDBACK = """
local space = redis.call('HGET', KEYS[1], 'space')
if not space then return '' end
if redis.call('HSETNX', KEYS[1], 'fb:' .. ARGV[2], ARGV[3]) == 0 then return '=' end
local counters = ARGV[1] .. space
redis.call('HINCRBY', counters, ARGV[2], 1)
if ARGV[2] == 'resolved' then
  local decided = tonumber(redis.call('HGET', KEYS[1], 'decided_ms'))
  local took = math.max(0, tonumber(ARGV[3]) - decided)
  redis.call('HINCRBY', counters, 'resolution_ms_sum', took)
  redis.call('HINCRBY', counters, 'resolution_count', 1)
end
return space
"""


@dataclass(frozen=True)
class OutcomeCounts:
    """The outcome counts of one space, and the rates made of them."""

    space_id: str
    decisions: int = 0
    auto: int = 0
    human: int = 0
    clicked: int = 0
    resolved: int = 0
    escalated: int = 0
    reopened: int = 0
    wrong_article: int = 0
    resolution_ms_sum: int = 0
    resolution_count: int = 0

    @staticmethod
    def _ratio(num: int, den: int) -> float | None:
        return num / den if den else None

    @property
    def auto_route_rate(self) -> float | None:
        return self._ratio(self.auto, self.decisions)

    @property
    def resolution_rate(self) -> float | None:
        return self._ratio(self.resolved, self.decisions)

    @property
    def escalation_rate(self) -> float | None:
        return self._ratio(self.escalated, self.decisions)

    @property
    def reopen_rate(self) -> float | None:
        return self._ratio(self.reopened, self.resolved)

    @property
    def mean_time_to_resolution_s(self) -> float | None:
        r = self._ratio(self.resolution_ms_sum, self.resolution_count)
        return None if r is None else r / 1000.0

    def rates(self) -> dict[str, float | None]:
        """The rates by name (None where the denominator is 0)."""
        return {
            "auto_route_rate": self.auto_route_rate,
            "resolution_rate": self.resolution_rate,
            "escalation_rate": self.escalation_rate,
            "reopen_rate": self.reopen_rate,
            "mean_time_to_resolution_s": self.mean_time_to_resolution_s,
        }


@dataclass(frozen=True)
class AbstentionBucket:
    """A tenant's decisions in one bucket of :data:`BUCKET_S` seconds."""

    start: datetime
    decisions: int
    human: int
    """Of which the router abstained on (sent to the human queue)."""


class Outcomes:
    """Outcome counting in Redis, for one namespace.

    Args:
        client: a redis-py client.
        namespace: key prefix (``CROSSROUTE_INDEX__NAMESPACE``).
        ttl_s: how long a ticket's record waits for its feedback (the ticket log's TTL).
    """

    def __init__(self, client: redis.Redis, namespace: str, ttl_s: int = 30 * 24 * 3600) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl_s = ttl_s
        self._counters = f"{namespace}:outcomes:"
        self._spaces = f"{namespace}:outcome-spaces"
        self._decision = client.register_script(_DECISION)
        self._feedback = client.register_script(_FEEDBACK)

    def _ticket(self, tenant: str, ticket_id: str) -> str:
        return f"{self.namespace}:outcome:{tenant}:{ticket_id}"

    def _day(self, tenant: str, day_start_s: int) -> str:
        day = datetime.fromtimestamp(day_start_s, UTC).strftime("%Y%m%d")
        return f"{self._counters}tenant:{tenant}:{day}"

    def record_decisions(self, decisions: Iterable[tuple[str, str, str, str, datetime]]) -> int:
        """Count ``(tenant, ticket_id, space_id, queue, decided_at)`` decisions; return how many
        were new (a ticket routed again is not counted again)."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for tenant, ticket_id, space_id, queue, at in decisions:
            at_s = int(at.timestamp())
            day_start = at_s - at_s % _DAY_S
            self._decision(
                keys=[
                    self._ticket(tenant, ticket_id),
                    self._counters + space_id,
                    self._spaces,
                    self._day(tenant, day_start),
                ],
                args=[
                    space_id,
                    queue,
                    int(at.timestamp() * 1000),
                    self.ttl_s,
                    (at_s - day_start) // BUCKET_S,
                    _DAYS_KEPT * _DAY_S,
                ],
                client=pipe,
            )
            n += 1
        return sum(int(r) for r in pipe.execute()) if n else 0

    def record_feedback(self, events: Sequence[tuple[str, str, str, datetime]]) -> list[str | None]:
        """Count ``(tenant, ticket_id, action, occurred_at)`` feedback events for the space that
        decided each ticket. Per event: that space; ``""`` when the ticket has no recorded decision;
        None when this action was counted for the ticket already (a replay)."""
        if not events:
            return []
        pipe = self.client.pipeline(transaction=False)
        for tenant, ticket_id, action, at in events:
            self._feedback(
                keys=[self._ticket(tenant, ticket_id)],
                args=[self._counters, action, int(at.timestamp() * 1000)],
                client=pipe,
            )
        out: list[str | None] = []
        for r in pipe.execute():
            value = reply_text(r)
            out.append(None if value == "=" else value)
        return out

    def counts(self, space_id: str) -> OutcomeCounts:
        """The counts of one space (zeros when it never served)."""
        raw = self.client.hgetall(self._counters + space_id)
        fields = {reply_text(k): int(v) for k, v in raw.items()}
        known = OutcomeCounts.__dataclass_fields__
        return OutcomeCounts(space_id, **{k: v for k, v in fields.items() if k in known})

    def abstention(
        self, tenant: str, window_s: int = _DAY_S, now: datetime | None = None
    ) -> list[AbstentionBucket]:
        """The tenant's decisions and abstentions per :data:`BUCKET_S` bucket over the last
        ``window_s`` seconds (at most 2 days), oldest first, empty buckets included."""
        window_s = min(max(window_s, BUCKET_S), 2 * _DAY_S)
        end = int((now or datetime.now(UTC)).timestamp())
        first = (end - window_s) // BUCKET_S + 1
        last = end // BUCKET_S
        days = sorted({b * BUCKET_S - (b * BUCKET_S) % _DAY_S for b in range(first, last + 1)})
        pipe = self.client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self._day(tenant, day))
        counts: dict[str, int] = {}
        for day, raw in zip(days, pipe.execute(), strict=True):
            for k, v in raw.items():
                counts[f"{day}/{reply_text(k)}"] = int(v)
        out = []
        for b in range(first, last + 1):
            start = b * BUCKET_S
            day = start - start % _DAY_S
            i = (start - day) // BUCKET_S
            out.append(
                AbstentionBucket(
                    start=datetime.fromtimestamp(start, UTC),
                    decisions=counts.get(f"{day}/d:{i}", 0),
                    human=counts.get(f"{day}/h:{i}", 0),
                )
            )
        return out

    def spaces(self) -> list[str]:
        """Every space that has recorded a decision, sorted."""
        return sorted(reply_text(s) for s in self.client.smembers(self._spaces))


class OutcomeCollector(Collector):
    """Prometheus collector reading the outcome counts of every space at scrape time."""

    def __init__(self, outcomes: Outcomes) -> None:
        self.outcomes = outcomes

    def collect(self) -> Iterable[GaugeMetricFamily]:
        tickets = GaugeMetricFamily(
            "crossroute_outcome_tickets",
            "Routed tickets per embedding space by outcome (decisions, auto, human, and feedback "
            "actions joined to the decision by ticket id; each counted once per ticket).",
            labels=["space_id", "outcome"],
        )
        rates = GaugeMetricFamily(
            "crossroute_outcome_rate",
            "Outcome rates per embedding space (auto_route, resolution, escalation, reopen).",
            labels=["space_id", "rate"],
        )
        ttr = GaugeMetricFamily(
            "crossroute_outcome_time_to_resolution_seconds",
            "Mean time from a decision to its ticket's 'resolved' feedback, per space.",
            labels=["space_id"],
        )
        try:
            spaces = self.outcomes.spaces()
            counts = [self.outcomes.counts(s) for s in spaces]
        except redis.RedisError:
            return  # Redis away: no outcome samples this scrape
        for c in counts:
            for name in ("decisions", "auto", "human", *ACTIONS):
                tickets.add_metric([c.space_id, name], getattr(c, name))
            for name, value in c.rates().items():
                if name.endswith("_rate") and value is not None:
                    rates.add_metric([c.space_id, name.removesuffix("_rate")], value)
            if c.mean_time_to_resolution_s is not None:
                ttr.add_metric([c.space_id], c.mean_time_to_resolution_s)
        yield tickets
        yield rates
        yield ttr
