"""The work the demo gives the workers: every query at once, then a few agent runs.

Tasks are reached by name through the app (``celeryapp.submit.registered``):
``celeryapp`` never imports the ``tasks`` package.
"""
from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import ResultSet

from celeryapp.config import get_settings
from celeryapp.core.names import AGENT_TASK, QUERY_TASK
from celeryapp.dev.demo import data as demo_data
from celeryapp.dev.demo import report
from celeryapp.submit import registered

QUERY_WAIT_S = 600.0
AGENT_TIMEOUT_S = 240.0


@dataclass
class Outcome:
    """One submitted task as the demo saw it finish."""

    name: str
    task_id: str
    state: str = "PENDING"
    value: Any = None  # the result dict on SUCCESS, else the error
    done_at: float | None = None  # seconds after submission

    @property
    def ok(self) -> bool:
        return self.state == "SUCCESS"

    def get(self, key: str, default: Any = None) -> Any:
        return self.value.get(key, default) if isinstance(self.value, dict) else default


def run_queries(queries: list[demo_data.DemoQuery]) -> tuple[list[Outcome], float, float]:
    """Submit every query at once; return outcomes, submit seconds and wall seconds."""
    run_query = registered(QUERY_TASK)
    started = time.monotonic()
    handles = {query.name: run_query.delay(query.sql, query.params) for query in queries}
    submitted = time.monotonic() - started
    report.queries_submitted(len(handles), submitted)
    outcomes = wait_all(handles, started, QUERY_WAIT_S, report.task_done)
    return outcomes, submitted, time.monotonic() - started


def claude_executable() -> str | None:
    return shutil.which(get_settings().claude_bin)


def run_agents(outcomes: list[Outcome], model: str | None) -> list[Outcome] | None:
    """Real agent runs about the query results, or None (and a clear line) without claude."""
    found = claude_executable()
    if not found:
        report.agents_without_claude()
        return None
    run_agent = registered(AGENT_TASK)
    results = {outcome.name: outcome.value for outcome in outcomes if outcome.ok}
    prompts = demo_data.agent_prompts(results)
    if not prompts:
        report.agents_without_results()
        return []
    report.agents_starting(found)
    started = time.monotonic()
    # each run in a scratch directory of its own (TURBO_AGENT_SCRATCH_DIR, set by the demo)
    handles = {name: run_agent.delay(prompt, "claude", model=model,
                                     max_turns=2, timeout=AGENT_TIMEOUT_S)
               for name, prompt in prompts.items()}
    done = wait_all(handles, started, AGENT_TIMEOUT_S + 120, report.task_done)
    report.agents(done)
    return done


def wait_all(handles: dict[str, Any], started: float, timeout: float,
             on_done: Callable[[Outcome], None]) -> list[Outcome]:
    """Wait for every AsyncResult, reporting each as it finishes.

    ``join_native`` listens on the Redis result backend's pub/sub instead of
    polling every key, so the waiting caller costs no CPU the workers need.
    """
    by_id = {handle.id: (name, handle) for name, handle in handles.items()}
    outcomes = {name: Outcome(name, handle.id) for name, handle in handles.items()}

    def finished(task_id: str, value: Any) -> None:
        name, handle = by_id[task_id]
        outcome = outcomes[name]
        outcome.state, outcome.value = handle.state, value
        outcome.done_at = time.monotonic() - started
        on_done(outcome)

    try:
        ResultSet(list(handles.values())).join_native(
            timeout=timeout, propagate=False, callback=finished)
    except ResultTimeout:
        for outcome in outcomes.values():
            if outcome.done_at is None:
                outcome.state, outcome.value = "TIMEOUT", f"no result after {timeout:.0f}s"
                on_done(outcome)
    finally:
        # The backend holds unfinished handles until their result comes; let go of
        # them (and their Redis subscription) now, while Redis still runs.
        for outcome in outcomes.values():
            if outcome.done_at is None:
                _forget(handles[outcome.name])
    return list(outcomes.values())


def _forget(handle) -> None:
    """Stop listening for a result nobody waits for any more."""
    with contextlib.suppress(Exception):  # Redis gone already: nothing to unsubscribe from
        handle.backend.remove_pending_result(handle)
