"""Tests of asyncclient.temporal: run them with ``nox -s temporal``."""
