"""``python -m streams``: the ``crossroute`` command."""

from __future__ import annotations

from streams.main import main

main()
