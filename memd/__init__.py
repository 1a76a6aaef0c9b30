"""memd: a local persistence daemon for AI-agent memory, spoken to over RESP."""

from __future__ import annotations

__version__ = "0.1.0"
