"""``python -m jdl``: the same as the ``jdl`` command."""

from jdl.cli import main

raise SystemExit(main())
