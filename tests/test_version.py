"""The version has one source, and everything that states it agrees."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re

import asyncclient
from asyncclient._version import __version__ as source_version

CHANGELOG = pathlib.Path(__file__).resolve().parent.parent / "CHANGELOG.md"


def _top_released_version() -> str:
    """The version of the first ``## [x.y.z]`` section of CHANGELOG.md (Unreleased skipped)."""
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        found = re.match(r"## \[(\d+\.\d+\.\d+[^\]]*)\]", line)
        if found:
            return found.group(1)
    raise AssertionError("CHANGELOG.md has no released section")


def test_package_root_reexports_the_one_version() -> None:
    """``asyncclient.__version__`` is the one in ``_version.py``, a PEP 440 release string."""
    assert asyncclient.__version__ == source_version
    assert re.fullmatch(r"\d+\.\d+\.\d+", source_version)


def test_installed_metadata_matches_the_source() -> None:
    """The installed distribution's metadata carries the same version as the source."""
    assert importlib.metadata.version("asyncclient") == source_version


def test_changelog_top_release_is_this_version() -> None:
    """The newest released section of the changelog is the version being shipped."""
    assert _top_released_version() == source_version
