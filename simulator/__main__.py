"""`python -m simulator`: the same as `cce-sync simulator`."""

from __future__ import annotations

from simulator.server import main

raise SystemExit(main())
