"""The fake codex and gemini CLIs (tests/support/fakes/) held to the real ones: the same
request through the worker's runner - the profile's own argv, environment and parser -
gives the same outcome from the fake (a directive) as from the real CLI against its API
stand-in: success or the same error class, the same exit code and API status, a session
id where the real one has it. So tests that use the fakes (timeouts, process groups,
Celery paths) test what the real CLIs do."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from support.agent_clis import cli_or_skip_reason
from support.fakes.gemini_api import start_gemini_api
from support.fakes.openai_api import start_openai_api
from support.helpers import run_checked
from tasks.agents.sandbox import Caps
from tasks.errors import TurboError

FAKES = Path(__file__).resolve().parents[1] / "support" / "fakes"
CASES = [  # name, the stand-in's directive, the fake's directive
    ("ok", "[api:mode=ok]", ""),
    ("429", "[api:mode=429]", "[fake:rate-limit]"),
    ("401", "[api:mode=401]", "[fake:unauthorized]"),
    ("403", "[api:mode=403]", "[fake:forbidden]"),
    ("500", "[api:mode=500]", "[fake:server-error]"),
]


def outcome(profile: str, executable: str, prompt: str, env: dict, caps: Caps) -> dict:
    # gemini without a model first asks a router model, whose retries and fallbacks
    # take a minute on a 429 (maxAttempts or not)
    options = {"model": "gemini-2.5-flash"} if profile == "gemini" else {}
    try:
        result = run_checked(profile, prompt, options, executable=executable, timeout=90,
                             caps=caps, env=env)
        return {"class": "success", "exit_code": result["exit_code"],
                "status": result["api_error_status"], "session": bool(result["session_id"]),
                "answer": bool(result["result"])}
    except TurboError as exc:
        return {"class": type(exc).__name__, "exit_code": exc.details.get("exit_code"),
                "status": exc.details.get("api_error_status"),
                "session": bool(exc.details.get("session_id")), "answer": False}


@pytest.fixture
def caps(tmp_path) -> Caps:
    return Caps(scratch_dir=tmp_path / "runs", cli_max_retries=1)


@pytest.fixture
def home():
    # codex will not set up its helper binaries under /tmp (a warning per run)
    path = Path(tempfile.mkdtemp(prefix="cli-home-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("name, api_directive, fake_directive", CASES, ids=[c[0] for c in CASES])
def test_fake_codex_gives_the_real_outcome(caps, home, name, api_directive, fake_directive):
    real, why_not = cli_or_skip_reason("codex")
    if real is None:
        pytest.skip(f"the real codex CLI: {why_not}")
    with start_openai_api() as api:
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(
            'model_provider = "standin"\n[model_providers.standin]\nname = "standin"\n'
            f'base_url = "{api.url}/v1"\nwire_api = "responses"\nenv_key = "OPENAI_API_KEY"\n'
            "request_max_retries = 0\nstream_max_retries = 0\n")
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "CODEX_HOME": str(home / ".codex"),
               "OPENAI_API_KEY": "sk-test"}
        want = outcome("codex", str(real), f"hi {api_directive}", env, caps)
    got = outcome("codex", str(FAKES / "codex"), f"hi {fake_directive}", env, caps)
    assert got == want


@pytest.mark.parametrize("name, api_directive, fake_directive", CASES, ids=[c[0] for c in CASES])
def test_fake_gemini_gives_the_real_outcome(caps, home, name, api_directive, fake_directive):
    real, why_not = cli_or_skip_reason("gemini")
    if real is None:
        pytest.skip(f"the real gemini CLI: {why_not}")
    (home / ".gemini").mkdir()
    (home / ".gemini" / "settings.json").write_text(json.dumps(
        {"security": {"auth": {"selectedType": "gemini-api-key"}}, "general": {"maxAttempts": 1}}))
    with start_gemini_api() as api:
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "GEMINI_API_KEY": "dummy",
               "GOOGLE_GEMINI_BASE_URL": api.url}
        want = outcome("gemini", str(real), f"hi {api_directive}", env, caps)
    got = outcome("gemini", str(FAKES / "gemini"), f"hi {fake_directive}", env, caps)
    assert got == want
