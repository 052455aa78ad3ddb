"""The Lua scripts are package data: each ``.lua`` file resolves through importlib.resources
(celeryapp/core/lua.py), documents itself (KEYS, ARGV, replies, a command line to run it
by hand) and ships in a wheel."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from celeryapp.core import lua

ROOT = Path(__file__).resolve().parents[2]
LUA_FILES = sorted(path.relative_to(ROOT).as_posix()
                   for path in (ROOT / "celeryapp").rglob("*.lua"))


def test_the_scripts_the_code_names_are_there():
    from celeryapp.flows import layout
    from celeryapp.overrides import backend, transport

    assert {"celeryapp/flows/flows.lua", "celeryapp/overrides/store_result.lua",
            "celeryapp/overrides/record_unacked.lua",
            "celeryapp/overrides/forget_unacked.lua"} <= set(LUA_FILES)
    assert "elseif command == 'started' then" in layout.script()
    for name in (backend.STORE_SCRIPT, transport.RECORD_UNACKED, transport.FORGET_UNACKED):
        assert "redis.call" in lua.source("celeryapp.overrides", name)


@pytest.mark.parametrize("path", LUA_FILES)
def test_each_file_resolves_as_package_data_and_documents_itself(path):
    package, name = path.rsplit("/", 1)
    text = lua.source(package.replace("/", "."), name)
    assert text == (ROOT / path).read_text(encoding="utf-8")
    assert lua.source(package.replace("/", "."), name) is text  # read once
    header = text[:text.index("\n\n")]
    assert header.startswith(f"-- {name}: ")
    for word in ("KEYS", "ARGV", "Repl"):  # Reply, Replies
        assert word in header, (path, word)
    assert f"redis-cli --eval {path} " in header  # how to run it by hand


def test_flows_lua_documents_each_of_its_commands():
    text = (ROOT / "celeryapp/flows/flows.lua").read_text(encoding="utf-8")
    defined = set(re.findall(r"^(?:if|elseif) command == '(\w+)' then$", text, re.M))
    assert defined == {"create", "start", "started", "queued", "succeeded", "failed", "cancel",
                       "notice", "noticed"}
    for command in defined:
        assert re.search(rf"^--   {command} ", text, re.M), command


def test_a_wheel_carries_the_lua_files(tmp_path):
    """``pip wheel --no-deps`` of a copy of the sources (no build/ left in the tree)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("celeryapp", "tasks"):
        shutil.copytree(ROOT / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert sorted(n for n in archive.namelist() if n.endswith(".lua")) == LUA_FILES
