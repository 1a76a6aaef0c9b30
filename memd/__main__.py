"""``python -m memd`` is the ``memd`` command."""

from __future__ import annotations

import sys

from memd.cli import main

sys.exit(main())
