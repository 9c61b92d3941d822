"""Smoke test of an installed wheel with no extras (run by ``nox -s package``, not by pytest).

Run from outside the repository, with the venv's own Python, so that what is imported is the
installed wheel and nothing else.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys


def main() -> None:
    """Import the package and drive its command line the way a new user would."""
    import asyncclient

    where = pathlib.Path(asyncclient.__file__).resolve()
    assert "site-packages" in where.parts, f"imported {where}, not the installed wheel"
    assert importlib.util.find_spec("rich") is None, "rich is installed: not a bare install"
    assert (where.parent / "py.typed").is_file(), "the wheel does not ship py.typed"
    installed = importlib.metadata.version("asyncclient")
    assert asyncclient.__version__ == installed, (asyncclient.__version__, installed)

    command = pathlib.Path(sys.executable).parent / "asyncclient"
    version = subprocess.run(  # noqa: S603 - our own entry point
        [str(command), "--version"], check=True, capture_output=True, text=True
    )
    assert installed in version.stdout, version.stdout
    usage = subprocess.run(  # noqa: S603 - our own entry point
        [str(command), "--help"], check=True, capture_output=True, text=True
    )
    assert "runs" in usage.stdout, usage.stdout
    print(f"asyncclient {installed} from {where.parent}: import, --version and --help work")


if __name__ == "__main__":
    main()
