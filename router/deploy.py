"""Which embedding space serves: the deployment record, its canary and its history, in Redis.

Every index holds one embedding space (:mod:`router.index`). Which of them answers tickets is one
small record, ``{ns}:deployment`` (:class:`Deployment`): the ``live`` space, an optional ``canary``
space with the percentage of tickets it serves, and the ``previous`` live space (what
``crossroute rollback`` returns to). Every change goes through :class:`Deployments`, as a
compare-and-set on that record (``WATCH``/``MULTI``), and bumps its ``revision``; the serving
processes poll the revision (:mod:`router.serving`) and follow without a restart. The ``live``
FT alias is kept pointing at the live index, for readers that only know the alias
(``crossroute index info``, ``crossroute route --index live``).

A serving process must find a space's bundle to embed its tickets: :meth:`Deployments.register`
records, per space, the bundle directory and the index (``{ns}:spaces``), when the index is
created (``crossroute index create``, ``crossroute reindex``, the worker at start).

**Canary assignment is consistent hashing of the ticket id** (:func:`canary_bucket`): a ticket's
bucket is a fixed number in [0, 100) drawn from the sha256 of its id, and the canary serves the
tickets whose bucket is below its percentage. A ticket never flips between spaces while the share
stays, and raising the share only adds tickets to the canary.

Nothing here drops an index: :meth:`Deployments.forget` refuses a space that is live or the canary
(forgetting the rollback target ends the possibility of a rollback), and dropping goes by the
index's own name, never through an alias.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from router.connection import reply_text
from router.exceptions import DeploymentError, IndexNotFoundError
from router.settings import IndexSettings

__all__ = [
    "Deployment",
    "Deployments",
    "SpaceRecord",
    "canary_bucket",
]


def canary_bucket(ticket_id: str) -> float:
    """The ticket's fixed place in [0, 100): the first 8 bytes of sha256(id), scaled."""
    digest = hashlib.sha256(ticket_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100.0


class Deployment(BaseModel):
    """The serving state: which space answers, and which one a share of tickets tries."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    live: str | None = None
    """The space that serves every ticket the canary does not take."""
    canary: str | None = None
    """A candidate space serving ``canary_percent`` % of tickets (by ticket-id hash)."""
    canary_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    previous: str | None = None
    """The live space before the last promotion: what ``rollback`` returns to."""
    revision: int = 0
    """Bumped by every change; serving processes reload when it moves."""
    updated_at: float = 0.0
    note: str = ""
    """What the last change was (``promote``, ``canary 5%``, ``rollback``…)."""

    def space_for(self, ticket_id: str) -> str | None:
        """The space that serves ``ticket_id`` (None: nothing is live)."""
        if self.canary is not None and canary_bucket(ticket_id) < self.canary_percent:
            return self.canary
        return self.live

    def serving(self) -> tuple[str, ...]:
        """The spaces that answer tickets now (live first, then the canary)."""
        return tuple(s for s in (self.live, self.canary) if s is not None)


@dataclass(frozen=True)
class SpaceRecord:
    """Where a space's bundle and index are."""

    space_id: str
    bundle: Path
    index: str
    registered_at: float


class Deployments:
    """The deployment record and the registry of spaces, for one namespace.

    Args:
        client: a redis-py client.
        settings: the namespace and the serving alias.
    """

    def __init__(self, client: redis.Redis, settings: IndexSettings) -> None:
        self.client = client
        self.settings = settings
        ns = settings.namespace
        self.state_key = f"{ns}:deployment"
        self.spaces_key = f"{ns}:spaces"
        self.alias = f"{ns}:{settings.alias}"

    # -- the registry -----------------------------------------------------------------------------

    def register(self, space_id: str, bundle: Path, index: str) -> SpaceRecord:
        """Record where ``space_id``'s bundle and index are (again: replaced)."""
        record = SpaceRecord(space_id, bundle.resolve(), index, time.time())
        payload = {
            "bundle": str(record.bundle),
            "index": index,
            "registered_at": record.registered_at,
        }
        self.client.hset(self.spaces_key, space_id, json.dumps(payload))
        return record

    def spaces(self) -> dict[str, SpaceRecord]:
        """Every registered space."""
        out: dict[str, SpaceRecord] = {}
        for raw_id, raw in self.client.hgetall(self.spaces_key).items():
            space_id = reply_text(raw_id)
            data = json.loads(raw)
            out[space_id] = SpaceRecord(
                space_id, Path(data["bundle"]), data["index"], float(data["registered_at"])
            )
        return out

    def space(self, space_id: str) -> SpaceRecord:
        """The record of one space.

        Raises:
            DeploymentError: never registered.
        """
        raw = self.client.hget(self.spaces_key, space_id)
        if raw is None:
            raise DeploymentError(
                f"space {space_id} is not registered: create its index first "
                "(`crossroute index create --model BUNDLE` or `crossroute reindex --model BUNDLE`)"
            )
        data = json.loads(raw)
        return SpaceRecord(space_id, Path(data["bundle"]), data["index"], data["registered_at"])

    def forget(self, space_id: str, *, force: bool = False) -> None:
        """Unregister a space (before its index is dropped); when it was the rollback target,
        there is no rollback any more.

        Args:
            force: even a space that serves: it leaves the deployment (the canary ends; when it
                was live, nothing is live until the next promotion).

        Raises:
            DeploymentError: the space serves (live or canary) and ``force`` is false.
        """
        if not force:
            self.check_droppable(space_id)

        def change(s: Deployment) -> dict[str, Any]:
            out: dict[str, Any] = {}
            if s.live == space_id:
                out["live"] = None
            if s.canary == space_id:
                out.update(canary=None, canary_percent=0.0)
            if s.previous == space_id:
                out["previous"] = None
            return out

        state = self.state()
        if space_id in (state.live, state.canary, state.previous):
            self._change(f"forget {space_id}", change)
        self.client.hdel(self.spaces_key, space_id)

    def check_droppable(self, space_id: str) -> None:
        """Refuse to let a space go that serves (live or canary).

        Raises:
            DeploymentError: it does.
        """
        state = self.state()
        role = {state.live: "live", state.canary: "the canary"}
        if space_id in role:
            raise DeploymentError(
                f"space {space_id} is {role[space_id]}: promote or roll back away from it first"
            )

    # -- the state --------------------------------------------------------------------------------

    def state(self) -> Deployment:
        """The deployment record (an empty one when nothing was ever promoted)."""
        raw = self.client.get(self.state_key)
        return Deployment() if raw is None else Deployment.model_validate_json(raw)

    def revision(self) -> int:
        """The record's revision only (cheap enough to poll)."""
        return self.state().revision

    def _change(self, note: str, change: Callable[[Deployment], dict[str, Any]]) -> Deployment:
        """Compare-and-set: apply ``change`` to the current record, retrying when another writer
        got in between; then point the alias at the (new) live index."""
        while True:
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self.state_key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(self.state_key)
                    current = Deployment() if raw is None else Deployment.model_validate_json(raw)
                    new = current.model_copy(
                        update={
                            **change(current),
                            "revision": current.revision + 1,
                            "updated_at": time.time(),
                            "note": note,
                        }
                    )
                    Deployment.model_validate(new.model_dump())  # the bounds hold
                    pipe.multi()
                    pipe.set(self.state_key, new.model_dump_json())
                    pipe.execute()
                except redis.WatchError:
                    continue
            break
        if new.live is not None:
            self._point_alias(self.space(new.live).index)
        return new

    def _point_alias(self, index: str) -> None:
        try:
            self.client.execute_command(  # type: ignore[no-untyped-call]
                "FT.ALIASUPDATE", self.alias, index
            )
        except redis.ResponseError as e:
            raise IndexNotFoundError(f"cannot point {self.alias} at {index}: {e}") from e

    def _servable(self, space_id: str) -> SpaceRecord:
        """A registered space whose index exists."""
        record = self.space(space_id)
        try:
            self.client.execute_command("FT.INFO", record.index)  # type: ignore[no-untyped-call]
        except redis.ResponseError as e:
            raise DeploymentError(
                f"space {space_id} has no index {record.index}: build it with "
                "`crossroute reindex --model BUNDLE`"
            ) from e
        return record

    def promote(self, space_id: str | None = None) -> Deployment:
        """Make ``space_id`` (default: the canary) live; the live space becomes ``previous``.

        Raises:
            DeploymentError: no space given and no canary; an unregistered space or one with no
                index.
        """
        target = space_id or self.state().canary
        if target is None:
            raise DeploymentError("no canary to promote: name a space (or a bundle) to promote")
        self._servable(target)

        def change(s: Deployment) -> dict[str, Any]:
            if s.live == target:
                return {"canary": None, "canary_percent": 0.0}
            return {"live": target, "previous": s.live, "canary": None, "canary_percent": 0.0}

        return self._change(f"promote {target}", change)

    def start_canary(self, space_id: str, percent: float) -> Deployment:
        """Serve ``percent`` % of tickets from ``space_id`` (0 ends the canary).

        Raises:
            DeploymentError: nothing is live yet, the space is the live one, or it cannot serve.
        """
        if not 0 <= percent <= 100:
            raise DeploymentError(f"a canary share is a percentage in [0, 100], not {percent}")
        state = self.state()
        if state.live is None:
            raise DeploymentError("nothing is live yet: promote a space first, then canary another")
        if space_id == state.live:
            raise DeploymentError(f"space {space_id} is live already: a canary is another space")
        self._servable(space_id)

        def change(s: Deployment) -> dict[str, Any]:
            if percent == 0:
                return {"canary": None, "canary_percent": 0.0}
            return {"canary": space_id, "canary_percent": float(percent)}

        return self._change(f"canary {space_id} {percent:g}%", change)

    def rollback(self) -> Deployment:
        """Return to the previous live space in one step (the canary ends; the space rolled back
        from becomes ``previous``, so a second rollback rolls forward).

        Raises:
            DeploymentError: no previous live space.
        """
        state = self.state()
        if state.previous is None:
            raise DeploymentError("nothing to roll back to: no space was live before this one")
        self._servable(state.previous)

        def change(s: Deployment) -> dict[str, Any]:
            if s.previous is None:
                raise DeploymentError("nothing to roll back to")
            return {"live": s.previous, "previous": s.live, "canary": None, "canary_percent": 0.0}

        return self._change(f"rollback to {state.previous}", change)
