"""The layout's promises that imports can break: the shell path stays lean, the
contracts in pyproject.toml hold, and the public import paths still work."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("celery", "kombu", "redis", "pydantic", "pydantic_settings", "billiard", "vine", "jinja2",
         "duckdb", "pyarrow")
LEAN = ["celeryapp.shell.cli", "celeryapp.core", "celeryapp.core.names", "celeryapp.core.policy",
        "celeryapp.core.errors", "celeryapp.core.redaction", "celeryapp.core.urls",
        "celeryapp.core.processes", "celeryapp.core.lua"]


def _loaded_by(modules: list[str]) -> list[str]:
    script = (f"import importlib, json, sys\n"
              f"for name in {modules!r}: importlib.import_module(name)\n"
              f"print(json.dumps(sorted(m for m in sys.modules "
              f"if m.split('.')[0] in {HEAVY!r})))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_turbo_entry_point_and_core_load_nothing_heavy():
    assert _loaded_by(LEAN) == []


def test_the_check_above_sees_a_heavy_import():
    """The same probe reports what the Celery side loads (so an empty list means something)."""
    loaded = _loaded_by(["celeryapp.config", "celeryapp.factory"])
    assert {"celery", "kombu", "pydantic"} <= {name.split(".")[0] for name in loaded}


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip(f"lint-imports not installed next to {sys.executable} (make venv installs it)")
    proc = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, names", [
    ("tasks.query", ["run_query"]),
    ("tasks.agent", ["run_agent"]),
    ("tasks.errors", ["QueryError", "InvalidRequest", "EngineUnavailable", "TaskTimeout",
                      "AgentError", "AgentRateLimited"]),
    ("tasks.results", ["read_parquet"]),
    ("celeryapp.flows", ["submit", "get_state", "wait", "cancel", "FlowSpecError"]),
    ("celeryapp.submit", ["apply_group", "batch"]),
])
def test_documented_import_paths(module, names):
    loaded = __import__(module, fromlist=names)
    for name in names:
        assert hasattr(loaded, name), f"{module}.{name}"


def test_errors_are_one_hierarchy_on_both_sides():
    """tasks.errors re-exports celeryapp.core.errors: one class, whichever path caught it."""
    import celeryapp.core.errors as core
    import tasks.errors as documented

    assert documented.QueryError is core.QueryError
    assert issubclass(documented.TaskTimeout, core.PermanentError)
