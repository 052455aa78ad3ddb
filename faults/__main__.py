"""`python -m faults` (`make faults`): faults against a private Redis and real workers.

Each scenario submits agent runs (the fake claude CLI of the test suite: it logs every
start and end of a run to a file of its own per task) and breaks something while they
run. Per scenario: submitted, completed (SUCCESS), failed (a final state that is not
SUCCESS, with its error: e.g. TaskCrashed when random kills hit one task three times),
lost (no final state by the deadline), duplicated (a task whose run reached its end
twice) and the recovery time. Prints a Markdown table (the one ops/RELIABILITY.md carries)
and writes var/faults/results.json. Minutes, not seconds: never part of `make test`, whose fast
subset is tests/integration/test_dead_worker.py and test_redelivery.py.

Scenarios: kill -9 of pool processes under load; kill -9 of a whole worker with another
alive; countdowns past the visibility timeout; runs longer than another worker's
visibility timeout; Redis shutdown and kill -9 under load; a
30 s network partition of one worker; warm shutdown; the bad-input catalogue. Then the
submit cost of ``appendfsync everysec`` against ``always``. ``python -m faults a,b`` runs
some (``appendfsync`` names the cost measurement).
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "support" / "fakes" / "claude"
QUEUE = "faults"


def setup(base: Path):
    from celeryapp.dev.localredis import LocalRedis

    # production's persistence (ops/redis/redis.conf): AOF, fsync every second
    redis = LocalRedis(workdir=base / "redis", password=secrets.token_hex(12), appendonly=True)
    redis.start()
    os.environ.update({
        "TURBO_BROKER_URL": f"{redis.url}/0", "TURBO_RESULT_BACKEND": f"{redis.url}/1",
        "TURBO_RESULTS_DIR": str(base / "results"), "TURBO_AGENT_SLOTS_DIR": str(base / "slots"),
        "TURBO_AGENT_SCRATCH_DIR": str(base / "runs"), "TURBO_CLAUDE_BIN": str(FAKE),
        "TURBO_RETRY_BACKOFF": "0.2", "TURBO_RETRY_BACKOFF_MAX": "1",
    })
    return redis


class Campaign:
    def __init__(self, base: Path, redis):
        from celeryapp import app

        self.app, self.base, self.redis, self.workers, self.started = app, base, redis, [], 0

    def worker(self, concurrency: int = 4, env: dict | None = None):
        from celeryapp.dev.localworker import WorkerProcess

        self.started += 1
        worker = WorkerProcess(name=f"f{self.started}@faults", queues=QUEUE,
                               concurrency=concurrency, env=env or {},
                               logfile=self.base / f"worker-{self.started}.log")
        self.workers.append(worker)
        return worker.start(self.app, timeout=120)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process and worker.process.poll() is None:
                worker.stop()
        self.workers.clear()

    def submit(self, tag: str, count: int, sleep: float, **options) -> list[tuple[str, Path]]:
        from tasks.agent import run_agent

        logs = self.base / tag
        logs.mkdir(exist_ok=True)
        sent = []
        for i in range(count):
            log = logs / f"{i}.log"
            handle = run_agent.apply_async((f"{tag} {i} [fake:sleep={sleep:g}] [fake:log={log}]",),
                                           {"timeout": 120}, queue=QUEUE, **options)
            sent.append((handle.id, log))
        return sent

    def outcome(self, sent, deadline: float) -> dict:
        backend = self.app.backend
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                states = {task_id: backend.get_task_meta(task_id, cache=False).get("status")
                          for task_id, _ in sent}
            except backend.connection_errors:  # a connection from before a Redis restart
                time.sleep(0.5)
                continue
            if all(state in ("SUCCESS", "FAILURE", "REVOKED") for state in states.values()):
                break
            time.sleep(0.5)
        ends = [sum(1 for event in events(log) if event["event"] == "end") for _, log in sent]
        failed = [backend.get_task_meta(task_id, cache=False).get("result")
                  for task_id, state in states.items() if state in ("FAILURE", "REVOKED")]
        return {"submitted": len(sent),
                "completed": sum(state == "SUCCESS" for state in states.values()),
                "failed": len(failed),
                "failures": sorted({type(f).__name__ if isinstance(f, BaseException)
                                    else str((f or {}).get("exc_type")) for f in failed}),
                "lost": sum(state not in ("SUCCESS", "FAILURE", "REVOKED")
                            for state in states.values()),
                "duplicated": sum(count > 1 for count in ends)}


def events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def pool_children(worker) -> list[int]:
    import psutil

    return [child.pid for child in psutil.Process(worker.pid).children()]


def pool_kills(c: Campaign, tasks: int = 40, kills: int = 10) -> dict:
    worker = c.worker(concurrency=4)
    sent = c.submit("pool-kills", tasks, 1.0)
    time.sleep(1.5)
    killed = 0
    for _ in range(kills):
        children = pool_children(worker)
        if children:
            os.kill(random.choice(children), signal.SIGKILL)
            killed += 1
        time.sleep(0.7)
    row = c.outcome(sent, time.monotonic() + 300)
    row.update(scenario=f"kill -9 of a pool process x{killed}, 4 slots busy",
               recovery="requeued at once (head of the queue)")
    c.stop()
    return row


def worker_kill(c: Campaign, tasks: int = 8) -> dict:
    alpha = c.worker(concurrency=4)
    sent = c.submit("worker-kill", tasks, 5.0)
    deadline = time.monotonic() + 60
    while sum(bool(events(log)) for _, log in sent) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    held = [log for _, log in sent if events(log)]  # what alpha runs (beta is not up yet)
    beta = c.worker(concurrency=4)
    os.killpg(alpha.pid, signal.SIGKILL)
    killed = time.time()
    row = c.outcome(sent, time.monotonic() + 180)
    resumed = [starts[1]["t"] - killed for starts in
               ([e for e in events(log) if e["event"] == "start"] for log in held)
               if len(starts) > 1]
    row.update(scenario=f"kill -9 of a whole worker holding {len(held)} runs, another alive",
               recovery=(f"{max(resumed):.1f} s to start again" if resumed else "-"))
    beta.stop()
    c.stop()
    return row


# limits that make a 6 s visibility timeout (3 + 1 + 1 + margin 1), swept every second
SHORT_LIMITS = {"TURBO_QUERY_MAX_TIMEOUT": "3", "TURBO_QUERY_TIMEOUT": "3",
                "TURBO_AGENT_MAX_TIMEOUT": "3", "TURBO_AGENT_TIMEOUT": "3",
                "TURBO_TIME_LIMIT_GRACE": "1", "TURBO_VISIBILITY_MARGIN": "1",
                "TURBO_UNACKED_RESTORE_INTERVAL": "1"}


def countdown_past_visibility(c: Campaign, tasks: int = 5) -> dict:
    for _ in range(2):
        c.worker(concurrency=2, env=SHORT_LIMITS)
    from tasks.agent import run_agent

    logs = c.base / "countdown"
    logs.mkdir(exist_ok=True)
    sent = []
    for i in range(tasks):
        log = logs / f"{i}.log"
        handle = run_agent.apply_async((f"later {i} [fake:log={log}]",), {"timeout": 3},
                                       queue=QUEUE, countdown=15)
        sent.append((handle.id, log))
    row = c.outcome(sent, time.monotonic() + 120)
    time.sleep(5)
    row["duplicated"] = sum(len([e for e in events(log) if e["event"] == "end"]) > 1
                            for _, log in sent)
    row.update(scenario="countdown 15 s past a 6 s visibility timeout, 2 workers",
               recovery="-")
    c.stop()
    return row


def long_run_past_visibility(c: Campaign, runs: int = 2) -> dict:
    """Runs of 20 s on a worker with the default limits, while another worker whose limits
    give a 6 s visibility timeout sweeps every second: the sweep finds the records older
    than its timeout, but their holder is alive."""
    alpha = c.worker(concurrency=runs)
    sent = c.submit("long", runs, 20.0)
    deadline = time.monotonic() + 60
    while sum(bool(events(log)) for _, log in sent) < runs and time.monotonic() < deadline:
        time.sleep(0.2)
    c.worker(concurrency=runs, env=SHORT_LIMITS)
    row = c.outcome(sent, time.monotonic() + 120)
    time.sleep(3)
    row["duplicated"] = sum(len([e for e in events(log) if e["event"] == "start"]) > 1
                            for _, log in sent)
    row.update(scenario=f"{runs} runs of 20 s on {alpha.name}, another worker with a 6 s "
                        f"visibility timeout", recovery="-")
    c.stop()
    return row


def redis_outage(c: Campaign, how: str, tasks: int = 120, down_s: float = 5.0) -> dict:
    """Redis stopped (SHUTDOWN, or kill -9) for ``down_s`` while 4 slots run agent runs
    and the rest wait in the queue; then started again on the same AOF."""
    c.worker(concurrency=4)
    sent = c.submit(f"redis-{how}", tasks, 0.5)
    deadline = time.monotonic() + 60
    while sum(bool(events(log)) for _, log in sent) < 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    (c.redis.kill if how == "kill" else c.redis.stop)()
    time.sleep(down_s)
    c.redis.start()
    back = time.time()
    row = c.outcome(sent, time.monotonic() + 300)
    starts = sorted(e["t"] for _, log in sent for e in events(log)
                    if e["event"] == "start" and e["t"] > back)
    label = "kill -9" if how == "kill" else "shutdown"
    row.update(scenario=f"Redis {label} for {down_s:g} s under load ({tasks} runs, 4 slots)",
               recovery=(f"work resumed {starts[0] - back:.1f} s after Redis was back"
                         if starts else "-"))
    c.stop()
    return row


def redis_shutdown(c: Campaign) -> dict:
    return redis_outage(c, "shutdown")


def redis_kill(c: Campaign) -> dict:
    return redis_outage(c, "kill")


def partition(c: Campaign, runs: int = 4, cut_s: float = 30.0) -> dict:
    """One worker (alpha) cut off from Redis for ``cut_s`` - its traffic black-holed by a
    forwarder, as a dropped link does - while it runs agent runs; beta is alive. Alpha
    must stop its runs before beta takes them over (the fence), so that none ends twice."""
    from celeryapp.dev.netcut import NetCut

    netcut = NetCut(c.redis.host, c.redis.port).start()
    through = {name: netcut.url(os.environ[name])
               for name in ("TURBO_BROKER_URL", "TURBO_RESULT_BACKEND")}
    alpha = c.worker(concurrency=runs, env=through)
    sent = c.submit("partition", runs, 25.0)  # alpha alone is up: it takes them all
    deadline = time.monotonic() + 60
    while sum(bool(events(log)) for _, log in sent) < runs and time.monotonic() < deadline:
        time.sleep(0.2)
    beta = c.worker(concurrency=runs)
    netcut.cut()
    cut = time.time()
    alpha.process.wait(cut_s)
    fenced = time.time() - cut if alpha.process.poll() is not None else None
    time.sleep(max(0.0, cut_s - (time.time() - cut)))
    netcut.heal()
    row = c.outcome(sent, time.monotonic() + 180)
    restarts = [starts[1]["t"] - cut for starts in
                ([e for e in events(log) if e["event"] == "start"] for _, log in sent)
                if len(starts) > 1]
    fence = (f"alpha stopped itself {fenced:.1f} s into the cut (exit "
             f"{alpha.process.returncode})" if fenced is not None else "alpha did NOT stop")
    row.update(scenario=f"{cut_s:g} s network partition of a worker running {runs} runs, "
                        f"another alive",
               recovery=f"{fence}; its runs started again on beta "
                        f"{max(restarts):.1f} s into the cut" if restarts else fence)
    beta.stop()
    c.stop()
    netcut.stop()
    return row


def warm_shutdown(c: Campaign, tasks: int = 24) -> dict:
    """SIGTERM (warm shutdown) of a worker with 4 runs going and more waiting: it finishes
    what runs, gives back what it reserved, and a new worker does the rest."""
    first = c.worker(concurrency=4)
    sent = c.submit("warm", tasks, 2.0)
    deadline = time.monotonic() + 60
    while sum(bool(events(log)) for _, log in sent) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = time.time()
    first.process.send_signal(signal.SIGTERM)
    first.process.wait(60)
    took = time.time() - stopped
    c.worker(concurrency=4)
    row = c.outcome(sent, time.monotonic() + 180)
    row.update(scenario=f"warm shutdown (SIGTERM) of a worker running 4 of {tasks} runs",
               recovery=f"it finished its runs and stopped in {took:.1f} s; a new worker "
                        f"did the rest")
    c.stop()
    return row


def bad_input(c: Campaign) -> dict:
    from tasks.agent import run_agent
    from tasks.errors import InvalidRequest
    from tasks.query import run_query

    calls = [
        lambda: run_query.apply_async(("SELECT 1",), {"timeout": float("nan")}, queue=QUEUE),
        lambda: run_query.apply_async(("SELECT 1",), {"engine": "postgres"}, queue=QUEUE),
        lambda: run_query.apply_async(("SELECT '" + "x" * (2 << 20) + "'",), queue=QUEUE),
        lambda: run_query.apply_async(("SELECT ?",), {"params": ["y" * (9 << 20)]}, queue=QUEUE),
        lambda: run_agent.apply_async(("hi",), {"permission_mode": "bogus"}, queue=QUEUE),
        lambda: run_agent.apply_async(("hi",), {"max_turns": 0}, queue=QUEUE),
        lambda: run_agent.apply_async(("hi",), {"profile": "nope"}, queue=QUEUE),
    ]
    refused = 0
    for call in calls:
        try:
            call()
        except InvalidRequest:
            refused += 1
    import redis as redis_py

    broker = redis_py.Redis.from_url(os.environ["TURBO_BROKER_URL"])
    sent = sum(broker.llen(key) for key in broker.scan_iter(match=f"{QUEUE}*"))
    return {"scenario": f"bad-input catalogue ({len(calls)} requests)",
            "submitted": len(calls), "completed": 0, "failed": 0, "lost": 0, "duplicated": 0,
            "recovery": f"{refused}/{len(calls)} refused at the door, {sent} sent"}


SUBMIT_TIMER = """
import sys, time
from tasks.query import run_query
n = int(sys.argv[1])
for _ in range(50):
    run_query.apply_async(("SELECT 1",), queue="fsync-nobody")
started = time.perf_counter()
for _ in range(n):
    run_query.apply_async(("SELECT 1",), queue="fsync-nobody")
print((time.perf_counter() - started) / n * 1e6)
"""


def appendfsync_cost(base: Path, submits: int = 2000) -> list[dict]:
    """What ``appendfsync always`` costs a submit against ``everysec`` (production's):
    the same ``run_query.apply_async`` loop against a Redis of each kind, this disk."""
    import subprocess

    from celeryapp.dev.localredis import LocalRedis

    rows = []
    for mode in ("everysec", "always"):
        redis = LocalRedis(workdir=base / f"fsync-{mode}", appendonly=True, appendfsync=mode)
        redis.start()
        try:
            env = {**os.environ, "TURBO_BROKER_URL": f"{redis.url}/0",
                   "TURBO_RESULT_BACKEND": f"{redis.url}/1"}
            runs = [float(subprocess.run([sys.executable, "-c", SUBMIT_TIMER, str(submits)],
                                         env=env, capture_output=True, text=True, check=True,
                                         cwd=ROOT).stdout.strip()) for _ in range(3)]
        finally:
            redis.stop()
        rows.append({"appendfsync": mode, "submit_us": sorted(runs)[1], "submits": submits})
    return rows


def fsync_table(rows: list[dict]) -> str:
    lines = ["| `appendfsync` | `delay()` cost (median of 3 x 2,000) | a host crash can lose |",
             "|---|---|---|"]
    lose = {"everysec": "the last ~1 s of accepted submits and state changes",
            "always": "nothing acknowledged"}
    for row in rows:
        lines.append(f"| `{row['appendfsync']}` | {row['submit_us']:.0f} µs | "
                     f"{lose[row['appendfsync']]} |")
    return "\n".join(lines)


SCENARIOS = {"pool_kills": pool_kills, "worker_kill": worker_kill,
             "countdown": countdown_past_visibility, "long_run": long_run_past_visibility,
             "redis_shutdown": redis_shutdown,
             "redis_kill": redis_kill, "partition": partition,
             "warm_shutdown": warm_shutdown, "bad_input": bad_input}


def table(rows: list[dict]) -> str:
    head = "| scenario | submitted | completed | failed | lost | duplicated | recovery |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for row in rows:
        failed = row.get("failed", 0)
        if failed:
            failed = f"{failed} ({', '.join(row['failures'])})"
        lines.append(f"| {row['scenario']} | {row['submitted']} | {row['completed']} | "
                     f"{failed} | {row['lost']} | {row['duplicated']} | {row['recovery']} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    names = [name for name in (argv[0].split(",") if argv else SCENARIOS)
             if name != "appendfsync"]
    base = Path(tempfile.mkdtemp(prefix="turbo-faults-"))
    redis = setup(base)
    campaign = Campaign(base, redis)
    rows = []
    try:
        for name in names:
            print(f"[faults] {name} ...", flush=True)
            row = SCENARIOS[name](campaign)
            print(f"[faults] {row}", flush=True)
            rows.append(row)
        campaign.stop()
        redis.stop()
        fsync = appendfsync_cost(base) if not argv or "appendfsync" in argv[0] else []
    finally:
        campaign.stop()
        redis.stop()
        if not os.environ.get("FAULTS_KEEP_DIR"):
            shutil.rmtree(base, ignore_errors=True)
    out = ROOT / "var" / "faults"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"scenarios": rows, "appendfsync": fsync},
                                                 indent=2) + "\n")
    print(table(rows))
    if fsync:
        print()
        print(fsync_table(fsync))
    bad = [row for row in rows if row["lost"] or row["duplicated"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
