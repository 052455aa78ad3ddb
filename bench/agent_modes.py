"""What a caller gets from an agent run in each failure mode of the REAL claude CLI.

The real ``claude`` (npm, the version pinned in tests/support/agent_clis.py) on a real
worker (threads pool, the io worker's) with the project's DEFAULT retry settings
(TURBO_MAX_RETRIES=3, TURBO_RETRY_BACKOFF=2 s, TURBO_AGENT_CLI_MAX_RETRIES=1), against
the Messages API stand-in (tests/support/fakes/anthropic_api.py), one run per mode:
what the caller sees, attempts, the API calls the stand-in counted (and what the
error's details state), wall time from submit to the caller's answer, and CLI
processes left afterwards. The issue's "before" figures (the same CLI, the old
retry policy: claude's own 10 retries under the project's 3) are in ``BEFORE``.
No plain-Celery column: this is about outcomes, not overhead.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from celeryapp.dev.localredis import free_port
from celeryapp.dev.localworker import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]
QUEUE = "agent-modes"
# From issue 13 (measured with the old policy, same CLI and stand-in).
BEFORE = {"429": "AgentRateLimited after 733 s, 44 API calls",
          "529": "AgentRateLimited after 918 s",
          "401": "AgentError after 184 s, 11 API calls",
          "500": "AgentError (permanent) after 184-191 s",
          "unreachable": "AgentError (permanent) after 184-191 s",
          "max-turns": "AgentError, session id and cost only inside the text",
          "timeout": "TaskTimeout, no session id, no output tail"}
MODES = [  # name, prompt directive, options
    ("ok", "[api:mode=ok]", {}),
    ("tools", "[api:mode=tools]", {}),
    ("max-turns", "[api:mode=tools]", {"max_turns": 1}),
    ("429", "[api:mode=429 retry-after=1]", {}),
    ("429 then ok", "[api:mode=429 until=2 retry-after=1]", {}),
    ("529", "[api:mode=529]", {}),
    ("500", "[api:mode=500]", {}),
    ("401", "[api:mode=401]", {}),
    ("403", "[api:mode=403]", {}),
    ("timeout", "[api:mode=slow secs=120]", {"timeout": 15}),
]


def _cli_processes(scratch: Path) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str((entry / "cwd").resolve()).startswith(str(scratch)):
                    count += 1
            except OSError:
                continue
    return count


def _worker(ctx, claude: str, api_url: str, home: Path, scratch: Path) -> WorkerProcess:
    from support.agent_clis import CLAUDE_QUIET_ENV

    ctx._started += 1
    env = {**CLAUDE_QUIET_ENV, "TURBO_CLAUDE_BIN": claude, "ANTHROPIC_BASE_URL": api_url,
           "HOME": str(home), "NO_PROXY": "127.0.0.1,localhost",
           "TURBO_AGENT_SCRATCH_DIR": str(scratch), "TURBO_HOST": f"modes{ctx._started}"}
    for name in ("TURBO_MAX_RETRIES", "TURBO_RETRY_BACKOFF", "TURBO_RETRY_BACKOFF_MAX",
                 "TURBO_AGENT_CLI_MAX_RETRIES"):
        os.environ.pop(name, None)  # the defaults, whatever the caller's shell says
    worker = WorkerProcess(name=f"modes{ctx._started}@bench", queues=QUEUE, concurrency=8,
                           pool="threads", env=env,
                           logfile=ctx.logs / f"agent-modes-{ctx._started}.log")
    ctx.workers.append(worker)
    return worker.start(ctx.app("turbo"), timeout=300)


def _one(run_agent, directive: str, options: dict, count) -> dict:
    key = uuid.uuid4().hex[:10]
    prompt = f"hello {directive[:-1]} key={key}]" if directive else "hello"
    options = dict(options)
    started = time.monotonic()
    handle = run_agent.apply_async((prompt,), options, queue=QUEUE)
    try:
        result = handle.get(timeout=1200)
        seen, details = "success", result
    except Exception as exc:  # noqa: BLE001 - what the caller sees is the point
        seen, details = type(exc).__name__, getattr(exc, "details", {}) or {}
    wall = time.monotonic() - started
    return {"caller_sees": seen, "wall_s": round(wall, 1),
            "attempts": details.get("attempts"),
            "api_calls_stated": details.get("api_calls_total"),
            "api_calls_counted": count(key) if directive else 0,
            "session_id": bool(details.get("session_id")),
            "cost_usd": details.get("cost_usd_total")}


def run(ctx) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.agent_clis import cli_or_skip_reason
    from support.fakes.anthropic_api import start_anthropic_api

    claude, why_not = cli_or_skip_reason("claude")
    if claude is None:
        return {"error": f"the real claude CLI: {why_not}"}
    from tasks.agent import run_agent

    rows: dict[str, dict] = {}
    home = Path(tempfile.mkdtemp(prefix="modes-home-"))
    scratch = Path(tempfile.mkdtemp(prefix="modes-runs-"))
    with start_anthropic_api() as api:
        worker = _worker(ctx, str(claude), api.url, home, scratch)
        try:
            for name, directive, options in ([] if ctx.quick else MODES) + (
                    MODES[:1] + MODES[3:4] if ctx.quick else []):
                rows[name] = _one(run_agent, directive, options, lambda k: api.count(key=k))
                rows[name]["cli_processes_left"] = _cli_processes(scratch)
                ctx.say(f"agent_modes {name}: {rows[name]}")
        finally:
            worker.stop(timeout=60)
            ctx.workers.remove(worker)
    down = _worker(ctx, str(claude), f"http://127.0.0.1:{free_port()}", home, scratch)
    try:
        rows["unreachable"] = _one(run_agent, "", {}, lambda k: 0)
        rows["unreachable"]["cli_processes_left"] = _cli_processes(scratch)
        ctx.say(f"agent_modes unreachable: {rows['unreachable']}")
    finally:
        down.stop(timeout=60)
        ctx.workers.remove(down)
    worst = max(row["wall_s"] for name, row in rows.items() if name != "timeout")
    return {"rows": rows, "before": BEFORE, "worst_failure_s": worst,
            # stated = counted, but where nothing listened (attempted calls the stand-in
            # never saw) and for a timeout (the request in flight is not yet counted)
            "calls_match": all(row["api_calls_stated"] in (None, row["api_calls_counted"])
                               for name, row in rows.items()
                               if name not in ("unreachable", "timeout")),
            "settings": {"TURBO_MAX_RETRIES": 3, "TURBO_RETRY_BACKOFF": 2.0,
                         "TURBO_AGENT_CLI_MAX_RETRIES": 1}}
