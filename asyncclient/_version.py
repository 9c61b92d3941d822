"""The package version: its one source (read by the build, the package root and the User-Agent)."""

from __future__ import annotations

__version__ = "0.1.0"
