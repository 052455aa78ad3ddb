"""The codex and gemini profiles against the REAL CLIs (npm, pinned in
tests/support/agent_clis.py) and local stand-ins of their APIs (tests/support/fakes/
openai_api.py, gemini_api.py): the flags they are given are accepted, answers and
sessions are read, API errors are classed, and no network fails in seconds instead
of a CLI waiting forever."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from celeryapp.dev.localredis import free_port
from support.agent_clis import cli_or_skip_reason
from support.fakes.gemini_api import start_gemini_api
from support.fakes.openai_api import start_openai_api
from support.helpers import run_checked
from tasks.agents.sandbox import Caps
from tasks.errors import AgentAuthError, AgentRateLimited, AgentUnavailable, InvalidRequest

CODEX, NO_CODEX = cli_or_skip_reason("codex")
GEMINI, NO_GEMINI = cli_or_skip_reason("gemini")
needs_codex = pytest.mark.skipif(CODEX is None, reason=f"the real codex CLI: {NO_CODEX}")
needs_gemini = pytest.mark.skipif(GEMINI is None, reason=f"the real gemini CLI: {NO_GEMINI}")


@pytest.fixture
def caps(tmp_path) -> Caps:
    return Caps(scratch_dir=tmp_path / "runs", permission_modes=("read-only", "default"),
                cli_max_retries=1)


# --- codex ---------------------------------------------------------------------------
def codex_env(home: Path, url: str, stream_retries: int = 1) -> dict[str, str]:
    """What an operator with a provider of their own sets up: $CODEX_HOME/config.toml
    (the built-in openai provider's retries cannot be configured)."""
    codex_home = home / ".codex"
    codex_home.mkdir(parents=True, exist_ok=True)
    (codex_home / "config.toml").write_text(
        'model_provider = "standin"\n[model_providers.standin]\nname = "standin"\n'
        f'base_url = "{url}/v1"\nwire_api = "responses"\nenv_key = "OPENAI_API_KEY"\n'
        f"request_max_retries = 0\nstream_max_retries = {stream_retries}\n")
    return {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(codex_home),
            "OPENAI_API_KEY": "sk-test", "DATABRICKS_TOKEN": "must-not-leak"}


@pytest.fixture
def codex_home():
    import tempfile
    # codex refuses to set up its helper binaries under /tmp (a warning per run)
    path = Path(tempfile.mkdtemp(prefix="codex-home-", dir="/var/tmp"))
    yield path
    import shutil
    shutil.rmtree(path, ignore_errors=True)


@needs_codex
def test_codex_answer_session_and_usage(caps, codex_home):
    with start_openai_api() as api:
        result = run_checked("codex", "say hi [api:mode=ok]", {"permission_mode": "read-only"},
                             executable=str(CODEX), timeout=60, caps=caps,
                             env=codex_env(codex_home, api.url))
    assert result["result"].startswith("standin answer: say hi")
    assert len(result["session_id"]) == 36 and result["num_turns"] == 1
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    assert not (codex_home / ".codex" / "sessions").exists()  # --ephemeral
    assert list(caps.scratch_dir.iterdir()) == []


@needs_codex
def test_codex_keeps_and_resumes_a_session(caps, codex_home):
    with start_openai_api() as api:
        env = codex_env(codex_home, api.url)
        first = run_checked("codex", "remember 7 [api:mode=ok]", {"keep_session": True},
                            executable=str(CODEX), timeout=60, caps=caps, env=env)
        assert list((codex_home / ".codex" / "sessions").rglob("*.jsonl"))
        again = run_checked("codex", "what was it [api:mode=ok]", {"resume": first["session_id"]},
                            executable=str(CODEX), timeout=60, caps=caps, env=env)
    assert again["session_id"] == first["session_id"]


@needs_codex
@pytest.mark.parametrize("mode, error, status", [
    ("429", AgentRateLimited, 429), ("401", AgentAuthError, 401),
    ("500", AgentUnavailable, None), ("disconnect", AgentUnavailable, None),
])
def test_codex_api_errors_are_classed(caps, codex_home, mode, error, status):
    with start_openai_api() as api:
        with pytest.raises(error) as raised:
            run_checked("codex", f"hi [api:mode={mode}]", {}, executable=str(CODEX), timeout=60,
                        caps=caps, env=codex_env(codex_home, api.url))
    details = raised.value.details
    assert details["api_error_status"] == status and details["exit_code"] == 1
    assert details["session_id"]  # thread.started came first


@needs_codex
def test_codex_without_network_fails_in_seconds(caps, codex_home):
    env = codex_env(codex_home, f"http://127.0.0.1:{free_port()}", stream_retries=0)
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="Connection failed"):
        run_checked("codex", "hi", {}, executable=str(CODEX), timeout=120, caps=caps, env=env)
    # without features.unbounded_connection_retries=false it waits forever
    assert time.monotonic() - started < 60


@needs_codex
def test_codex_refuses_what_the_operator_did_not_allow(caps, codex_home):
    with pytest.raises(InvalidRequest, match="TURBO_AGENT_PERMISSION_MODES"):
        run_checked("codex", "hi", {"permission_mode": "danger-full-access"},
                    executable=str(CODEX), timeout=60, caps=caps,
                    env=codex_env(codex_home, "http://127.0.0.1:1"))


# --- gemini --------------------------------------------------------------------------
def gemini_env(home: Path, url: str, max_attempts: int = 1) -> dict[str, str]:
    """API-key auth against the stand-in; the retry bound gemini reads only from its
    settings (what the README tells an operator to set)."""
    settings = home / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}},
                                    "general": {"maxAttempts": max_attempts}}))
    return {"PATH": os.environ["PATH"], "HOME": str(home), "GEMINI_API_KEY": "dummy",
            "GOOGLE_GEMINI_BASE_URL": url}


@needs_gemini
def test_gemini_answer_in_an_untrusted_scratch_directory(caps, tmp_path):
    with start_gemini_api() as api:
        result = run_checked("gemini", "say hi [api:mode=ok]", {"model": "gemini-2.5-flash"},
                             executable=str(GEMINI), timeout=90, caps=caps,
                             env=gemini_env(tmp_path / "home", api.url))
    assert result["result"].startswith("standin answer: say hi")
    assert len(result["session_id"]) == 36 and result["api_calls"] == 1
    assert result["usage"]["models"]["gemini-2.5-flash"]["tokens"]["total"] > 0


@needs_gemini
@pytest.mark.parametrize("mode, error, status", [
    ("429", AgentRateLimited, 429), ("401", AgentAuthError, 401), ("403", AgentAuthError, 403),
    ("500", AgentUnavailable, 500), ("503", AgentUnavailable, 503),
])
def test_gemini_errors_on_stderr_are_classed(caps, tmp_path, mode, error, status):
    with start_gemini_api() as api:
        with pytest.raises(error) as raised:
            run_checked("gemini", f"hi [api:mode={mode}]", {"model": "gemini-2.5-flash"},
                        executable=str(GEMINI), timeout=90, caps=caps,
                        env=gemini_env(tmp_path / "home", api.url))
    details = raised.value.details
    assert details["api_error_status"] == status
    assert details["exit_code"] == status & 0xFF  # gemini exits with the HTTP code


@needs_gemini
def test_gemini_without_network_is_transient(caps, tmp_path):
    started = time.monotonic()
    with pytest.raises(AgentUnavailable, match="fetch failed"):
        run_checked("gemini", "hi", {"model": "gemini-2.5-flash"}, executable=str(GEMINI),
                    timeout=90, caps=caps,
                    env=gemini_env(tmp_path / "home", f"http://127.0.0.1:{free_port()}"))
    assert time.monotonic() - started < 60
