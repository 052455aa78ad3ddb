"""`python -m celeryapp.dev.demo` end to end: a real subprocess with a clean environment.

The demo starts its own Redis, workers and Flower (never the session's Redis
from conftest, never one on 6379) in a temporary state directory, so a user's
var/demo is never touched. Agent runs go to the fake claude CLI.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from celeryapp.config import reset_settings
from celeryapp.dev.demo import data as demo_data
from celeryapp.dev.demo import services as demo_services
from celeryapp.dev.demo import state as demo_state
from celeryapp.dev.demo import workload as demo_workload
from support.helpers import gone, wait_for

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = ROOT / "tests" / "support" / "fakes" / "claude"
ROWS = 200_000

needs_proc = pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc")


def demo_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any TURBO_*/FLOWER_* setting conftest made."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TURBO_", "FLOWER_"))}
    env.update(TURBO_DEMO_DIR=str(state_dir), TURBO_DEMO_ROWS=str(ROWS), COLUMNS="200",
               PYTHONUNBUFFERED="1", **extra)
    return env


def processes_matching(*needles: str) -> list[str]:
    """Live processes whose command line contains any of ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if any(needle in line for needle in needles):
            found.append(f"{entry.name}: {line}")
    return found


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "celeryapp.dev.demo"], cwd=ROOT,
                          env=demo_env(state_dir, TURBO_CLAUDE_BIN=str(FAKE_CLAUDE)),
                          capture_output=True, text=True, timeout=280)
    return proc, state_dir, time.monotonic() - started


def test_demo_succeeds_on_both_workers(demo_run):
    proc, _, _ = demo_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    per_worker = re.search(r"Tasks per worker: (.*)", proc.stdout).group(1)
    assert "worker@alpha" in per_worker and "worker@beta" in per_worker
    assert f"{len(demo_data.QUERIES)} succeeded, 0 failed" in proc.stdout
    seen = re.search(r"Flower saw \(this run's tasks\)\s*│([^│]*)│", proc.stdout)
    assert seen, proc.stdout[-3000:]
    # 10 queries and 3 agent runs (the fake claude), each SUCCESS once Flower caught up
    assert seen.group(1).strip() == f"{len(demo_data.QUERIES) + 3} SUCCESS", seen.group(1)


def test_flower_counts_only_this_runs_tasks():
    """Flower's state persists across demo runs: earlier tasks must not be counted."""
    flower_tasks = {"a": {"state": "SUCCESS"}, "b": {"state": "FAILURE"},
                    "old": {"state": "SUCCESS"}, "c": {"state": "SUCCESS"}}
    assert demo_services.count_states(flower_tasks, {"a", "b", "c", "missing"}) == \
        {"SUCCESS": 2, "FAILURE": 1}


def test_results_are_fetched_by_another_process(demo_run):
    proc, _, _ = demo_run
    submitter = int(re.search(r"this is pid (\d+)", proc.stdout).group(1))
    fetched = re.search(r"Fetched (\d+) results in a separate process \(pid (\d+)\): "
                        r"(\d+) SUCCESS", proc.stdout)
    assert fetched, proc.stdout[-3000:]
    count, fetcher, succeeded = map(int, fetched.groups())
    assert fetcher != submitter
    assert count == succeeded == len(demo_data.QUERIES)
    customers = demo_data.customers_for(ROWS)
    assert f"customer_lifetime: read {customers:,} rows back from" in proc.stdout


def test_agent_runs_reported(demo_run):
    proc, _, _ = demo_run
    assert re.search(r"agent runs\s*│\s*3 of 3 succeeded", proc.stdout), proc.stdout[-3000:]


def test_secrets_are_not_printed(demo_run):
    proc, _, _ = demo_run
    assert set(re.findall(r"redis://:([^@\s]*)@", proc.stdout)) == {"***"}


@needs_proc
def test_nothing_left_running(demo_run):
    proc, state_dir, _ = demo_run
    redis_port = re.search(r"redis://:\*\*\*@127\.0\.0\.1:(\d+)", proc.stdout).group(1)
    flower_port = re.search(r"Flower dashboard: http://127\.0\.0\.1:(\d+)", proc.stdout).group(1)
    assert processes_matching(str(state_dir), f"127.0.0.1:{redis_port}",
                              f"--port={flower_port}") == []
    assert not (state_dir / "state.json").exists()
    assert not (state_dir / "redis").exists()  # its config held the password


def _as_from_a_terminal() -> None:
    """In the child before exec: Ctrl-C's default disposition, as a shell gives it. An
    ignored SIGINT is inherited, and Python then never raises KeyboardInterrupt: a test
    run that ignores it (an xdist worker after some in-process Celery code) would make
    the demo ignore Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _small_pipe() -> tuple[int, int]:
    """A pipe that holds one page: a writer gets at most that far ahead of its reader."""
    import fcntl

    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)
    return read_end, write_end


@needs_proc
def test_ctrl_c_stops_everything(tmp_path):
    """Ctrl-C in the middle of the run. The demo writes to a one-page pipe read a byte at
    a time (no read-ahead), and is held (SIGSTOP) once its workers are up until the
    SIGINT is pending, so that however slowly this test reads or scans /proc beside
    others, the demo cannot reach its end first. It starts with SIGINT's default
    disposition (:func:`_as_from_a_terminal`)."""
    read_end, write_end = _small_pipe()
    proc = subprocess.Popen([sys.executable, "-m", "celeryapp.dev.demo"], cwd=ROOT,
                            env=demo_env(tmp_path), stdout=write_end,
                            stderr=subprocess.STDOUT, preexec_fn=_as_from_a_terminal)
    os.close(write_end)
    reader = os.fdopen(read_end, "rb", buffering=0)  # readline(): byte by byte
    seen = []
    killer = threading.Timer(120, proc.kill)  # the reads below have no timeout of their own
    killer.start()
    try:
        for line in iter(reader.readline, b""):
            seen.append(line.decode(errors="replace"))
            if "worker@beta ready" in seen[-1]:
                proc.send_signal(signal.SIGSTOP)  # the demo only: its workers run on
                break
        assert processes_matching(str(tmp_path)), "workers should be running now"
        proc.send_signal(signal.SIGINT)  # pending until it runs again
        proc.send_signal(signal.SIGCONT)
        rest = reader.readall().decode(errors="replace")
        proc.wait(90)
    finally:
        killer.cancel()
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == 130, output
    assert "Interrupted" in output
    assert processes_matching(str(tmp_path)) == []
    assert not (tmp_path / "state.json").exists()


def group_of(pgids: set[int]) -> list[int]:
    """Processes (zombies too) whose process group is one of ``pgids``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) in pgids:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@needs_proc
def test_down_stops_what_keep_left_running(tmp_path):
    """`--keep`, then `--down` (`make demo-down`): nothing the demo started is left."""
    env = demo_env(tmp_path, TURBO_CLAUDE_BIN=str(tmp_path / "no-such-claude"))
    kept = subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--keep"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=280)
    state_file = tmp_path / "state.json"
    recorded = json.loads(state_file.read_text())["processes"] if state_file.exists() else []
    leaders = {record["pid"] for record in recorded}
    try:
        assert kept.returncode == 0, kept.stdout[-4000:] + kept.stderr[-4000:]
        assert "--keep:" in kept.stdout
        assert sorted(record["name"] for record in recorded) == [
            "flower", "io@alpha", "io@beta", "redis", "worker@alpha", "worker@beta"]
        started = group_of(leaders)  # the four and their children (the pool processes)
        assert len(started) > len(leaders)
        assert not [pid for pid in started if gone(pid)], "all running before --down"

        down = subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--down"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        for record in recorded:
            assert re.search(rf"{re.escape(record['name'])} \(pid {record['pid']}\): "
                             rf"(stopped|killed)", down.stdout), down.stdout
        assert "not running" not in down.stdout, down.stdout
        assert [pid for pid in started if not gone(pid)] == []
        assert [pid for pid in group_of(leaders) if not gone(pid)] == []
        assert not state_file.exists()
        assert not (tmp_path / "redis").exists()  # its config held the password
    finally:
        for pgid in leaders:  # whatever --down missed must not outlive the test
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _sleeper(*tag: str, ignore_term: bool = False) -> subprocess.Popen:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "time.sleep(600)\n"
    return subprocess.Popen([sys.executable, "-c", code, *tag], start_new_session=True)


def _wait_gone(proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


@needs_proc
def test_down_stops_an_abandoned_process(tmp_path):
    abandoned = _sleeper("worker@abandoned", str(tmp_path))
    innocent = _sleeper("unrelated")
    started = int(demo_state.start_time(innocent.pid))
    state = {"demo_pid": None, "processes": [
        {"name": "worker@abandoned", "pid": abandoned.pid,
         "start_time": demo_state.start_time(abandoned.pid), "argv": abandoned.args},
        # a recycled pid: the process recorded under it started earlier than this one
        {"name": "redis", "pid": innocent.pid, "start_time": str(started - 100),
         "argv": innocent.args},
    ]}
    (tmp_path / "state.json").write_text(json.dumps(state))
    try:
        out = subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--down"], cwd=ROOT,
                             env=demo_env(tmp_path), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"worker@abandoned (pid {abandoned.pid}): stopped (TERM)" in out.stdout
        assert f"redis (pid {innocent.pid}): not running" in out.stdout
        assert _wait_gone(abandoned)
        assert innocent.poll() is None
        assert not (tmp_path / "state.json").exists()
    finally:
        for proc in (abandoned, innocent):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    again = subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--down"], cwd=ROOT,
                           env=demo_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "Nothing to stop" in again.stdout


@needs_proc
def test_down_finds_the_pool_of_a_worker_gone_alone(tmp_path):
    """A worker killed on its own leaves its pool processes in its group: --down knows
    them by the argv the demo launched the worker with."""
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(600)\n"  # a fork stays
    leader = subprocess.Popen([sys.executable, "-c", code, "worker@gone", str(tmp_path)],
                              start_new_session=True)
    started = demo_state.start_time(leader.pid)
    try:
        leader.wait(10)
        pool = wait_for(lambda: group_of({leader.pid}), 10, "the forked pool process")
        state = {"demo_pid": None, "processes": [
            {"name": "worker@gone", "pid": leader.pid, "start_time": started,
             "argv": leader.args}]}
        (tmp_path / "state.json").write_text(json.dumps(state))
        out = subprocess.run([sys.executable, "-m", "celeryapp.dev.demo", "--down"], cwd=ROOT,
                             env=demo_env(tmp_path), capture_output=True, text=True, timeout=60)
        assert f"worker@gone (pid {leader.pid}): stopped (TERM)" in out.stdout, out.stdout
        assert all(gone(pid) for pid in pool)
    finally:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_proc
def test_term_group_until_empty_escalates_to_kill():
    stubborn = _sleeper("stubborn", ignore_term=True)
    try:
        time.sleep(0.3)  # the TERM handler is installed
        assert demo_state.term_group_until_empty(stubborn.pid, timeout=0.5) == "killed (KILL)"
        assert _wait_gone(stubborn, 5)
        assert stubborn.returncode == -signal.SIGKILL
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()


@pytest.fixture
def no_claude(monkeypatch, tmp_path):
    monkeypatch.setenv("TURBO_CLAUDE_BIN", str(tmp_path / "no-such-claude"))
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def test_agent_runs_skipped_without_claude(no_claude, tmp_path, capsys):
    assert demo_workload.run_agents([], model=None) is None
    assert "claude not found on PATH: agent runs skipped" in capsys.readouterr().out


def test_sample_database_rebuilt_only_when_stale(tmp_path):
    path = tmp_path / "sample.duckdb"
    built, _ = demo_data.ensure_database(path, 2_000)
    assert built
    assert demo_data.ensure_database(path, 2_000) == (False, 0.0)
    assert demo_data.database_info(path) == {
        "schema_version": demo_data.SCHEMA_VERSION, "orders": 2_000}
    built, _ = demo_data.ensure_database(path, 3_000)  # other size: rebuilt
    assert built and demo_data.database_info(path)["orders"] == 3_000
