"""The project's Lua scripts, kept as ``.lua`` files beside the code that runs them.

Each file is package data (``[tool.setuptools.package-data]`` in pyproject.toml), so an
installed wheel has it; it opens with a header saying its KEYS, ARGV and replies and how
to run it by hand with ``redis-cli --eval``. The text is read once per process, on first
use: the ``turbo`` shell reads the workflow script only in ``turbo submit flow``.
Standard library only (the shell and the worker side both use it).
"""
from __future__ import annotations

from functools import cache


@cache
def source(package: str, name: str) -> str:
    """The text of the Lua file ``name`` in ``package`` (a dotted package name)."""
    from importlib import resources  # ~20 ms cold: only for the commands that run Lua

    return resources.files(package).joinpath(name).read_text(encoding="utf-8")
