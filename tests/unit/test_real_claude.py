"""The REAL claude CLI (pinned in support/agent_clis.py) against the Messages API stand-in
(support/fakes/anthropic_api.py), and the fake CLI (support/fakes/claude) held to the same
shape: same keys in the same order, same JSON types, same exit code, same subtype,
is_error and api_error_status, same stderr, so the fake cannot drift from the real CLI.

Every real run has CLAUDE_CODE_MAX_RETRIES=1 (one retry), a 1 s retry-after on 429 and a
throwaway HOME; the runs of one kind go in parallel. Skipped only when the real CLI
cannot be installed (no node/npm, no registry), with the reason.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from celeryapp.dev.localredis import free_port
from support.agent_clis import claude_env, cli_or_skip_reason
from support.fakes.anthropic_api import start_anthropic_api

FAKE = Path(__file__).resolve().parents[1] / "support" / "fakes" / "claude"
BASE = ["-p", "--output-format", "json", "--no-session-persistence"]
RATE_LIMIT_START = "API Error: Request rejected (429) · This request would exceed the rate limit"


@dataclass
class Case:
    """One behaviour: the stand-in's directive for the real CLI, the fake's directive."""
    name: str
    api: str | None             # [api:...] body; None: the API is unreachable
    fake: str                   # [fake:...] body ("" for a plain answer); {state} = a temp file
    args: list = field(default_factory=list)
    exit: int = 0
    subtype: str = "success"
    is_error: bool = False
    status: object = None       # api_error_status; "absent" = no such key
    calls: int = 1              # POST /v1/messages the stand-in counts
    text: str | None = None     # how `result` starts; None: no `result` key
    env: dict = field(default_factory=dict)


CASES = [
    Case("ok", "mode=ok", "", text="Hello from the stand-in (claude-"),
    Case("tools", "mode=tools", "", calls=2, text="Tool result: tool-ran"),
    Case("max-turns", "mode=tools", "max-turns", ["--max-turns", "1"], exit=1,
         subtype="error_max_turns", is_error=True, status="absent"),
    Case("429", "mode=429", "rate-limit-until=1 state={state}", exit=1, is_error=True,
         status=429, calls=2, text=RATE_LIMIT_START),
    Case("529", "mode=529", "overloaded", exit=1, is_error=True, status=529, calls=2,
         text="API Error: 529 Overloaded. This is a server-side issue, usually temporary"),
    Case("401", "mode=401", "unauthorized", exit=1, is_error=True, status=401, calls=2,
         text="Invalid API key · Fix external API key"),
    Case("403", "mode=403", "forbidden", exit=1, is_error=True, status=403,
         text="Failed to authenticate. API Error: 403 Your API key does not have permission"),
    Case("500", "mode=500", "server-error", exit=1, is_error=True, status=500, calls=2,
         text="API Error: 500 Internal server error. This is a server-side issue"),
    Case("unreachable", None, "server-error=unreachable", exit=1, is_error=True, calls=0,
         text="API Error: Unable to connect to API (ConnectionRefused)"),
    Case("timeout", "mode=slow secs=4", "server-error=timeout", exit=1, is_error=True, calls=2,
         text="Request timed out", env={"API_TIMEOUT_MS": "1000"}),
    # 3 consecutive 529s end the run whatever CLAUDE_CODE_MAX_RETRIES (>= 2) allows
    Case("529-repeated", "mode=529", "overloaded=repeated", exit=1, is_error=True, calls=3,
         text="API Error: Repeated 529 Overloaded errors. The API is at capacity",
         env={"CLAUDE_CODE_MAX_RETRIES": "5"}),
    Case("budget", "mode=ok", "max-budget", ["--max-budget-usd", "0.01"], exit=1,
         subtype="error_max_budget_usd", is_error=True, status="absent"),
    Case("refusal", "mode=ok stop=refusal", "refusal", exit=1, is_error=True,
         text="API Error: Claude Code is unable to respond to this request"),
]
# (errors, num_turns, stop_reason, terminal_reason) where the run stopped on a limit
STOPPED = {"max-turns": (["Reached maximum number of turns (1)"], 2, "tool_use", "max_turns"),
           "budget": (["Reached maximum budget ($0.01)"], 1, "end_turn", "absent")}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    elapsed: float
    calls: int = 0

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(argv, env, cwd, stdin=None, timeout=90) -> Run:
    started = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=str(cwd), capture_output=True, text=True,
                          input=stdin, timeout=timeout,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # closed again: nothing listens


@pytest.fixture(scope="module")
def claude() -> Path:
    path, reason = cli_or_skip_reason("claude")
    if path is None:
        pytest.skip(f"the real claude CLI is unavailable: {reason}")
    return path


@pytest.fixture(scope="module")
def api():
    with start_anthropic_api(retry_after=1) as server:
        yield server


class Runner:
    def __init__(self, claude, api, base: Path):
        self.claude, self.api, self.base = claude, api, base

    def home(self) -> Path:
        home = self.base / uuid.uuid4().hex[:8]
        home.mkdir()
        return home

    def real(self, case: Case, *, base=BASE, stdin=False, retries=1, home=None, cwd=None,
             prompt="hello", extra=()) -> Run:
        key = f"{case.name}-{uuid.uuid4().hex[:8]}"
        text = f"{prompt} [api:{case.api} key={key}]" if case.api else prompt
        home = home or self.home()
        url = self.api.url if case.api else dead_url()
        env = claude_env(url, home, max_retries=retries, **case.env)
        argv = [str(self.claude), *base, *case.args, *extra] + ([] if stdin else ["--", text])
        run = run_cli(argv, env, cwd or home, stdin=text if stdin else None)
        run.calls = self.api.count(key=key)
        return run

    def fake(self, case: Case, *, base=BASE, home=None, cwd=None, prompt="hello",
             extra=()) -> Run:
        home = home or self.home()
        directive = case.fake.format(state=home / "calls")
        text = f"{prompt} [fake:{directive}]" if directive else prompt
        env = claude_env("http://127.0.0.1:9", home, **case.env)
        return run_cli([str(FAKE), *base, *case.args, *extra, "--", text], env, cwd or home)


@pytest.fixture(scope="module")
def runner(claude, api, tmp_path_factory):
    return Runner(claude, api, tmp_path_factory.mktemp("real-claude"))


@pytest.fixture(scope="module")
def real_runs(runner):
    """Every case against the real CLI, in parallel (about 10 s in all)."""
    with ThreadPoolExecutor(max_workers=len(CASES)) as pool:
        futures = {case.name: pool.submit(runner.real, case) for case in CASES}
        return {name: future.result() for name, future in futures.items()}


def describe(run: Run) -> str:
    return (f"exit {run.code} in {run.elapsed:.1f}s, {run.calls} API calls\n"
            f"stdout: {run.stdout[:1500]}\nstderr: {run.stderr[-1500:]}")


# --- (a) the real CLI against the stand-in -------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_real_claude_result(case, real_runs):
    run = real_runs[case.name]
    assert run.code == case.exit, describe(run)
    assert run.stderr == "", describe(run)  # the real CLI says everything in the JSON
    assert run.calls == case.calls, describe(run)
    result = run.json
    assert result["type"] == "result"
    assert result["subtype"] == case.subtype, describe(run)
    assert result["is_error"] is case.is_error, describe(run)
    if case.status == "absent":
        assert "api_error_status" not in result
    else:
        assert result["api_error_status"] == case.status, describe(run)
    if case.text is None:
        assert "result" not in result, describe(run)
    else:
        assert result["result"].startswith(case.text), describe(run)
    assert uuid.UUID(result["session_id"])
    if case.name in STOPPED:  # max-turns: the limit is 1 and num_turns says 2
        errors, turns, stop_reason, terminal_reason = STOPPED[case.name]
        assert result["errors"] == errors
        assert result["num_turns"] == turns
        assert result["stop_reason"] == stop_reason
        assert result.get("terminal_reason", "absent") == terminal_reason
        assert result["total_cost_usd"] > 0
    elif case.name == "refusal":  # the model answered (and it cost), with stop_reason refusal
        assert result["stop_reason"] == "refusal" and result["total_cost_usd"] > 0
    elif case.is_error:  # the API call failed: nothing was spent, no model used
        assert "errors" not in result
        assert result["total_cost_usd"] == 0 and result["modelUsage"] == {}
        assert (result["stop_reason"], result["terminal_reason"]) == ("stop_sequence",
                                                                      "completed")
    else:
        assert result["num_turns"] == (2 if case.name == "tools" else 1)
        assert (result["stop_reason"], result["terminal_reason"]) == ("end_turn", "completed")
        assert result["total_cost_usd"] > 0 and result["usage"]["output_tokens"] > 0


def test_real_claude_reads_the_prompt_from_stdin_and_retries_a_429(runner):
    with ThreadPoolExecutor(max_workers=3) as pool:
        stdin = pool.submit(runner.real, CASES[0], stdin=True)
        recovered = pool.submit(runner.real, Case("429-then-ok", "mode=429 until=1", ""))
        no_retry = pool.submit(runner.real, Case("529-no-retry", "mode=529", ""), retries=0)
    run = stdin.result()
    assert run.code == 0 and run.json["result"].startswith("Hello from the stand-in"), describe(run)
    run = recovered.result()  # 429 once, retried after its retry-after: 1 s, then the answer
    assert run.code == 0 and run.calls == 2 and run.json["is_error"] is False, describe(run)
    run = no_retry.result()  # CLAUDE_CODE_MAX_RETRIES=0: no retry at all
    assert run.code == 1 and run.calls == 1 and run.json["api_error_status"] == 529, \
        describe(run)


# --- (b) the fake has the real CLI's shape ---------------------------------------------------
def shape(value):
    """A JSON value's shape: dicts by key (modelUsage's entries by their own shape, since
    its keys are model names), lists by the shapes of their items, numbers as one type."""
    if isinstance(value, dict):
        return {k: (_model_shapes(value[k]) if k == "modelUsage" else shape(value[k]))
                for k in value}
    if isinstance(value, list):
        return sorted({json.dumps(shape(item), sort_keys=True) for item in value})
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _model_shapes(usage: dict) -> dict:
    """modelUsage's entries under one key: the shape of the last (all share one)."""
    shapes = [shape(entry) for entry in usage.values()]
    return {"<model>": shapes[-1]} if shapes else {}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fake_claude_has_the_real_shape(case, real_runs, runner):
    real, fake = real_runs[case.name], runner.fake(case)
    assert fake.code == real.code, describe(fake)
    assert fake.stderr == real.stderr == "", describe(fake)
    ours, theirs = fake.json, real.json
    assert list(ours) == list(theirs), "keys or their order differ"
    assert shape(ours) == shape(theirs)
    for name in ("type", "subtype", "is_error", "api_error_status", "stop_reason",
                 "terminal_reason", "errors"):
        assert ours.get(name, "absent") == theirs.get(name, "absent"), name
    if case.is_error and case.text is not None:  # the error texts are the real ones
        assert ours["result"].startswith(case.text)


@pytest.mark.parametrize("name", ["ok", "429", "max-turns"])
def test_fake_text_output_is_the_real_one(name, runner):
    case = next(c for c in CASES if c.name == name)
    text = ["-p", "--output-format", "text", "--no-session-persistence"]
    real = runner.real(case, base=text, prompt="hi")
    fake = runner.fake(case, base=text, prompt="hi")
    assert (fake.code, fake.stderr) == (real.code, real.stderr), describe(real)
    if name == "ok":  # the answer and a newline
        assert real.stdout.endswith(".\n") and fake.stdout.endswith("\n")
    else:
        assert fake.stdout == real.stdout, describe(real)


def test_resume_after_a_turn_limit_real_and_fake(runner):
    """A turn-limit stop can be resumed only if the session was persisted (no
    --no-session-persistence), from the same cwd and the same HOME (CLAUDE_CONFIG_DIR);
    the fake fails the same way, with the same message on stderr and nothing on stdout."""
    persist = ["-p", "--output-format", "json"]
    stop = next(c for c in CASES if c.name == "max-turns")
    go_on = Case("resume", "mode=ok", "")

    def check(kind):
        call = getattr(runner, kind)
        home = runner.home()
        work, other = home / "proj.x_1", home / "other"
        work.mkdir(), other.mkdir()
        unsaved = call(stop, home=home, cwd=work).json["session_id"]  # --no-session-persistence
        first = call(stop, base=persist, home=home, cwd=work)
        assert first.code == 1 and first.json["subtype"] == "error_max_turns", describe(first)
        sid = first.json["session_id"]
        sessions = [p.relative_to(home) for p in home.glob(".claude/projects/*/*.jsonl")]
        assert sessions == [Path(".claude/projects", re.sub(r"[^A-Za-z0-9]", "-", str(work)),
                                 f"{sid}.jsonl")], (kind, sessions)
        resumed = call(go_on, base=persist, home=home, cwd=work, extra=["--resume", sid])
        assert resumed.code == 0 and resumed.json["session_id"] == sid, (kind, describe(resumed))
        assert resumed.json["subtype"] == "success"
        for missing, cwd in ((unsaved, work), (sid, other)):
            lost = call(go_on, base=persist, home=home, cwd=cwd, extra=["--resume", missing])
            assert (lost.code, lost.stdout) == (1, ""), (kind, describe(lost))
            assert lost.stderr == f"No conversation found with session ID: {missing}\n", kind

    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(check, kind) for kind in ("real", "fake")]:
            future.result()


def test_fake_env_and_prompt_source_directives(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHOWN": "yes"}
    argv = [str(FAKE), *BASE]
    shown = run_cli(argv + ["--", "[fake:env=SHOWN]"], env, tmp_path)
    unset = run_cli(argv + ["--", "[fake:env=NOT_SET_ANYWHERE]"], env, tmp_path)
    piped = run_cli(argv, env, tmp_path, stdin="[fake:stdin-or-argv]")
    given = run_cli(argv + ["--", "[fake:stdin-or-argv]"], env, tmp_path)
    assert [r.json["result"] for r in (shown, unset, piped, given)] == ["yes", None, "stdin",
                                                                         "argv"]


# --- (c) stream-json, which the worker reads: the same events, real and fake ------------------
STREAM = ["-p", "--output-format", "stream-json", "--verbose", "--no-session-persistence"]
STREAM_CASES = [case for case in CASES if case.name in ("ok", "max-turns", "429", "403",
                                                         "unreachable")]


def events(run: Run) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def outline(run: Run) -> list[tuple]:
    """The event sequence the parser relies on: (type, subtype, synthetic?), repeated
    content-block events of one message folded into one."""
    seen, last_message = [], None
    for event in events(run):
        if event["type"] == "assistant":
            message = event["message"]
            if message.get("id") == last_message:
                continue
            last_message = message.get("id")
            seen.append(("assistant", message.get("model") == "<synthetic>"))
        elif event["type"] in ("system", "result"):
            seen.append((event["type"], event.get("subtype")))
    return seen


@pytest.mark.parametrize("case", STREAM_CASES, ids=[c.name for c in STREAM_CASES])
def test_fake_streams_the_events_the_real_cli_streams(case, runner):
    real = runner.real(case, base=STREAM)
    fake = runner.fake(case, base=STREAM)
    assert real.code == fake.code, describe(real)
    first_real, first_fake = events(real)[0], events(fake)[0]
    assert (first_real["type"], first_real["subtype"]) == ("system", "init")
    needed = {"type", "subtype", "session_id", "model", "cwd", "tools", "permissionMode"}
    assert needed <= set(first_real) and needed <= set(first_fake)
    assert outline(fake) == outline(real), describe(real)
    assert list(events(fake)[-1]) == list(events(real)[-1])  # the result: same keys, order
