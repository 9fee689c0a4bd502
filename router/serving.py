"""The routers a serving process answers with, following the deployment without a restart.

:class:`Serving` holds one :class:`~router.routing.Router` per serving space (the live one and the
canary), each with its own bundle and its own index, so a decision is always made with one space's
embedder against that space's index (each Router checks it). It polls the deployment record
(:class:`~router.deploy.Deployments`) every ``poll_s`` seconds in a background thread; when the
revision moves, the routers of the new state are loaded (bundles verified, indexes opened) *before*
the swap, which is one reference assignment: a request in flight finishes with the routers it
started with, the next one gets the new set. A state that cannot be loaded (a bundle missing on this
machine) is logged and retried at the next poll, while the last good state keeps serving.

``Serving.fixed(router)`` serves one router and never follows anything (``--index NAME``, tests).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.deploy import Deployment, Deployments, SpaceRecord
from router.exceptions import DeploymentError
from router.routing import Router
from router.schemas import RoutingDecision, Ticket

if TYPE_CHECKING:
    from models.settings import ModelSettings
    from router.settings import IndexSettings, RoutingSettings

__all__ = ["Serving", "router_loader"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _State:
    deployment: Deployment
    routers: dict[str, Router]


class Serving:
    """Route each ticket with the router of the space the deployment assigns it.

    Args:
        deployments: the deployment record to follow (None: never changes).
        load: builds the Router of a registered space (its bundle and index).
        initial: routers to start with, by space id, and the deployment they stand for.
        poll_s: how often the record's revision is read.
    """

    def __init__(
        self,
        deployments: Deployments | None,
        load: Callable[[SpaceRecord], Router],
        initial: _State,
        poll_s: float = 2.0,
    ) -> None:
        self.deployments = deployments
        self._load = load
        self._state = initial
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def fixed(cls, router: Router) -> Serving:
        """Serve ``router`` for every ticket, following nothing."""
        state = _State(Deployment(live=router.space_id), {router.space_id: router})

        def load(record: SpaceRecord) -> Router:  # pragma: no cover - never called
            raise DeploymentError(f"a fixed router serves only {router.space_id}")

        return cls(None, load, state)

    @classmethod
    def following(
        cls,
        deployments: Deployments,
        load: Callable[[SpaceRecord], Router],
        *,
        poll_s: float = 2.0,
        preloaded: Router | None = None,
    ) -> Serving:
        """Serve what the deployment record says now, and follow it (call :meth:`start`).

        Args:
            preloaded: a router already built for one of the spaces (saves loading it twice).

        Raises:
            DeploymentError: nothing is live.
        """
        serving = cls(deployments, load, _State(Deployment(), {}), poll_s)
        if preloaded is not None:
            serving._state = _State(Deployment(), {preloaded.space_id: preloaded})
        serving.refresh(force=True)
        if serving.deployment.live is None:
            raise DeploymentError(
                "nothing is live: start the worker once, or `crossroute promote --model BUNDLE`"
            )
        return serving

    # -- following --------------------------------------------------------------------------------

    @property
    def deployment(self) -> Deployment:
        """The deployment being served."""
        return self._state.deployment

    @property
    def live(self) -> Router:
        """The live space's router (searches, health)."""
        state = self._state
        if state.deployment.live is None:  # only a fixed/following Serving exists: never
            raise DeploymentError("nothing is live")
        return state.routers[state.deployment.live]

    @property
    def space_id(self) -> str:
        """The live space."""
        return self.live.space_id

    def routers(self) -> dict[str, Router]:
        """The routers serving now, by space."""
        return dict(self._state.routers)

    def refresh(self, *, force: bool = False) -> bool:
        """Load and switch to the current deployment if its revision moved; return whether it
        switched.

        Raises:
            DeploymentError, ModelsError, RouterError: only with ``force`` (the first load); later
                failures are logged and the current state keeps serving.
        """
        if self.deployments is None:
            return False
        try:
            deployment = self.deployments.state()
            if not force and deployment.revision == self._state.deployment.revision:
                return False
            routers: dict[str, Router] = {}
            for space in deployment.serving():
                known = self._state.routers.get(space)
                routers[space] = (
                    known if known is not None else self._load(self.deployments.space(space))
                )
        except Exception:
            if force:
                raise
            log.exception("cannot follow deployment change; still serving %s", self._describe())
            return False
        self._state = _State(deployment, routers)
        self.reloads += 1
        log.warning(
            "serving deployment revision %d: %s", deployment.revision, self._describe(),
            extra={"event": "deployment", "revision": deployment.revision},
        )  # fmt: skip
        return True

    def _describe(self) -> str:
        d = self._state.deployment
        text = f"live {d.live}"
        if d.canary is not None:
            text += f", canary {d.canary} at {d.canary_percent:g}%"
        return text

    def start(self) -> None:
        """Poll the deployment record in a daemon thread until :meth:`stop`."""
        if self.deployments is None or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.poll_s):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="crossroute-deployment", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 1)
            self._thread = None

    # -- serving ----------------------------------------------------------------------------------

    def router_for(self, ticket_id: str) -> Router:
        """The router of the space serving ``ticket_id`` (the canary for its share)."""
        state = self._state
        space = state.deployment.space_for(ticket_id)
        if space is None:
            raise DeploymentError("nothing is live")
        return state.routers[space]

    def route(self, ticket: Ticket, **options: Any) -> RoutingDecision:
        """Route ``ticket`` with its space's router; the decision names that space."""
        return self.router_for(ticket.id).route(ticket, **options)

    def describe(self) -> dict[str, Any]:
        """The live router's description plus the deployment (revision, canary)."""
        d = self._state.deployment
        return {
            **self.live.describe(),
            "revision": d.revision,
            "canary": d.canary,
            "canary_percent": d.canary_percent,
        }


def router_loader(
    client: Any,
    model: ModelSettings,
    index: IndexSettings,
    routing: RoutingSettings,
    *,
    media_root: Path | None = None,
) -> Callable[[SpaceRecord], Router]:
    """How a serving process builds the router of a registered space: its bundle verified and
    loaded, its index opened by its own name (never through the alias), both of that space.

    Raises (from the returned function):
        DeploymentError: the bundle found there is of another space.
        ModelsError, IndexNotFoundError: the bundle or the index cannot be opened.
    """
    from models.embedder import Embedder
    from router.index import VectorIndex

    def load(record: SpaceRecord) -> Router:
        embedder = Embedder.from_settings(model, record.bundle)
        if embedder.space_id != record.space_id:
            raise DeploymentError(
                f"{record.bundle} now holds space {embedder.space_id}, not {record.space_id}: "
                "register the bundle again (`crossroute index create --model BUNDLE`)"
            )
        return Router(
            embedder, VectorIndex.open(client, record.index, index), routing, media_root=media_root
        )

    return load
