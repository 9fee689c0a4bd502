"""``python -m streams``: the ``crossroute`` command."""

from __future__ import annotations

if __name__ == "__main__":
    from streams.main import main

    main()
