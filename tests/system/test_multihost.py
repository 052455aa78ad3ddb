"""Two worker hosts and a Redis host as Linux network namespaces (see tests/support/netns.py).

worker@alpha and worker@beta each run ``python -m celeryapp.worker.host`` in their
own namespace and reach Redis only over a bridge, as separate machines would.
The tests run in file order on one module-scoped cluster: spread, pinning,
``celery inspect``, a 30 s cable cut of alpha (it must rejoin by itself), and
last the SIGKILL of alpha mid-task (its task must finish on beta; a fresh alpha
is started afterwards so the cluster is whole again).

Needs root (``ip netns``); skipped otherwise.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import netns

REASON = netns.unavailable_reason()
if REASON:
    pytest.skip(REASON, allow_module_level=True)

from celeryapp.config import Settings  # noqa: E402

# hosts that die and lose their links, heartbeat timeouts: run alone (tests/suite.py)
pytestmark = pytest.mark.serial

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = ROOT / "tests" / "support" / "fakes" / "claude"
ALPHA, BETA = "worker@alpha", "worker@beta"

# Small limits so that the visibility timeout (the time Redis keeps a dead
# worker's message before handing it out again) is short enough to wait for.
LIMITS = {
    "TURBO_QUERY_MAX_TIMEOUT": "20",
    "TURBO_AGENT_MAX_TIMEOUT": "20",
    "TURBO_QUERY_TIMEOUT": "10",
    "TURBO_AGENT_TIMEOUT": "10",
    "TURBO_TIME_LIMIT_GRACE": "2",
    "TURBO_VISIBILITY_MARGIN": "5",
    "TURBO_UNACKED_RESTORE_INTERVAL": "2",
    "TURBO_RETRY_BACKOFF_MAX": "1",
}
SETTINGS = Settings(query_max_timeout=20, agent_max_timeout=20, query_timeout=10,
                    agent_timeout=10, time_limit_grace=2, visibility_margin=5,
                    unacked_restore_interval=2, retry_backoff_max=1)
VISIBILITY = SETTINGS.visibility_timeout  # hard limit (20 + 2 + 2) + margin 5 = 29 s
RESTORE_INTERVAL = SETTINGS.unacked_restore_interval
CUT_S = 30.0


class Cluster:
    """The namespaces, Redis, the two workers and the client, torn down as one."""

    def __init__(self, topology: netns.Topology, workdir: Path, duckdb_path: str):
        self.topology = topology
        self.workdir = workdir
        self.duckdb_path = duckdb_path
        self.redis = netns.NetnsRedis(topology, workdir / "redis")
        self.workers: dict[str, netns.NetnsWorker] = {}
        self.client: netns.NetnsClient | None = None

    # --- environment ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("TURBO_HOST", "TURBO_WORKER_QUEUES", "TURBO_REDIS_PASSWORD",
                            "TURBO_WORKER_STATEDB")}
        env.update(LIMITS)
        env.update({
            "TURBO_BROKER_URL": f"{self.redis.url}/0",
            "TURBO_RESULT_BACKEND": f"{self.redis.url}/1",
            "TURBO_DUCKDB_PATH": self.duckdb_path,
            "TURBO_CLAUDE_BIN": str(FAKE_CLAUDE),
            "TURBO_RESULTS_DIR": str(self.workdir / "results"),
            "TURBO_AGENT_SLOTS_DIR": str(self.workdir / "agent-slots"),
            "TURBO_WORKER_CONCURRENCY": "2",
            "TURBO_AGENT_CONCURRENCY": "2",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.redis.start()
        self.client = netns.NetnsClient(self.topology, self.env(),
                                        self.workdir / "logs" / "client.log").start()
        for host in netns.HOSTS:
            self.start_worker(host, wait=False)
        self.wait_ready(netns.HOSTS)

    def start_worker(self, host: str, wait: bool = True) -> netns.NetnsWorker:
        # one worker per host for every kind of work (a layout turbo-worker allows next to
        # the usual prefork + io pair, which tests/integration/test_threads_pool.py and
        # the deploy tests cover): this test is about hosts, links and host loss
        env = {**self.env(),
               "TURBO_WORKER_QUEUES": f"queries,agents,default,warehouse,host.{host}.io",
               "TURBO_WORKER_STATEDB": str(self.workdir / "state" / f"worker-{host}.db")}
        worker = netns.NetnsWorker(self.topology, host, env,
                                   self.workdir / "logs" / f"worker-{host}.log").start()
        self.workers[host] = worker
        if wait:
            self.wait_ready([host])
        return worker

    def wait_ready(self, hosts, timeout: float = 90.0) -> float:
        """Until every worker named answers a broadcast ping; return the seconds waited."""
        names = sorted(f"worker@{h}" for h in hosts)
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            for host in hosts:
                if not self.workers[host].alive():
                    pytest.fail(f"worker@{host} exited: {self.workers[host].log_tail()}")
            if set(names) <= set(self.ping(names)):
                return time.monotonic() - started
        pytest.fail(f"{names} not answering after {timeout}s\n{self.logs()}")

    def teardown(self) -> None:
        """Stop everything and check that nothing is left: no process in any of our
        namespaces, no namespace (deleting them removes the bridge and veths)."""
        for part in (self.client, *self.workers.values(), self.redis):
            if part is not None:
                try:
                    part.stop()
                except Exception as exc:  # keep tearing down; destroy() kills the rest
                    print(f"[multihost] stopping {type(part).__name__} failed: {exc}")
        leftovers = {role: self.topology.pids(role) for role in self.topology.roles}
        self.topology.destroy()  # raises if a process or a namespace survives
        assert all(p.process is None or p.process.poll() is not None
                   for p in (*self.workers.values(), self.redis, self.client) if p)
        if any(leftovers.values()):
            print(f"[multihost] processes still in namespaces after stop, killed: {leftovers}")

    # --- client side (runs in the redis namespace) ------------------------------------
    def ping(self, destination=None, timeout: float = 1.0) -> list[str]:
        return self.client.call("ping", destination=destination, timeout=timeout)

    def submit(self, task: str, *args, **kwargs) -> str:
        return self.client.call("submit", task=task, args=list(args), kwargs=kwargs)

    def wait(self, ids, timeout: float) -> list[dict]:
        return self.client.call("wait", ids=list(ids), timeout=timeout)

    def state(self, task_id: str) -> dict:
        return self.client.call("state", task_id=task_id)

    def inspect(self, method: str, destination=None, timeout: float = 5.0):
        return self.client.call("inspect", method=method, destination=destination,
                                timeout=timeout)

    def control(self, method: str, *args, destination=None):
        return self.client.call("control", method=method, args=list(args),
                                destination=destination)

    def celery_cli(self, *argv: str) -> subprocess.Popen:
        """``celery -A celeryapp <argv>`` started on the redis host (returns the Popen)."""
        return subprocess.Popen(
            self.topology.exec_argv("redis", [sys.executable, "-m", "celery", "-A", "celeryapp",
                                              *argv]),
            env=self.env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def logs(self) -> str:
        client = self.client.log_tail() if self.client else ""
        return "\n".join(w.log_tail() for w in self.workers.values()) + \
            "\n--- client ---\n" + client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, test_env):
    topology = netns.Topology()
    try:
        topology.create()
    except netns.NamespacesUnavailable as exc:
        pytest.skip(str(exc))
    built = Cluster(topology, tmp_path_factory.mktemp("multihost"), test_env["TURBO_DUCKDB_PATH"])
    try:
        started = time.monotonic()
        built.start()
        print(f"\n[multihost] {topology.prefix}: net {topology.net}.0/24, redis "
              f"{topology.address('redis')}, workers ready in {time.monotonic() - started:.1f}s, "
              f"visibility timeout {VISIBILITY}s, logs in {built.workdir}")
        yield built
    finally:
        built.teardown()


def _succeeded(outcomes: list[dict], cluster: Cluster) -> list[dict]:
    bad = [o for o in outcomes if o["state"] != "SUCCESS"]
    assert not bad, f"not successful: {bad}\n{cluster.logs()}"
    return [o["result"] for o in outcomes]


def _wait_started(cluster: Cluster, task_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = cluster.state(task_id)
        if outcome["state"] == "STARTED":
            return outcome["result"]  # {"pid": ..., "hostname": "worker@..."}
        assert outcome["state"] == "PENDING", outcome
        time.sleep(0.2)
    pytest.fail(f"{task_id} not started in {timeout}s\n{cluster.logs()}")


def test_tasks_spread_over_both_hosts(cluster):
    ids = [cluster.submit("agent", f"[fake:sleep=1] spread {i}") for i in range(8)]
    results = _succeeded(cluster.wait(ids, timeout=90), cluster)
    workers = [r["worker"] for r in results]
    print(f"\n[multihost] 8 agent runs: {workers.count(ALPHA)} on alpha, "
          f"{workers.count(BETA)} on beta")
    assert set(workers) == {ALPHA, BETA}


def test_host_pinned_tasks_run_only_on_their_host(cluster):
    ids = {host: [cluster.submit("query", f"SELECT {i} AS n", host=host) for i in range(4)]
           for host in netns.HOSTS}
    for host, pinned in ids.items():
        results = _succeeded(cluster.wait(pinned, timeout=60), cluster)
        assert {r["worker"] for r in results} == {f"worker@{host}"}
        assert [r["rows"] for r in results] == [[[i]] for i in range(4)]


def test_celery_inspect_from_the_redis_host_sees_both_workers(cluster):
    # one agent run busy on each host, so that `inspect active` has something to show
    busy = {host: cluster.submit("agent", f"[fake:sleep=8] busy on {host}", host=host)
            for host in netns.HOSTS}
    for host, task_id in busy.items():
        assert _wait_started(cluster, task_id)["hostname"] == f"worker@{host}"
    both = f"{ALPHA},{BETA}"  # with destinations the CLI returns as soon as both replied
    commands = {what: cluster.celery_cli("inspect", what, "-d", both, "-t", "20", "--json")
                for what in ("ping", "active", "stats")}
    replies = {}
    for what, process in commands.items():
        out, err = process.communicate(timeout=90)
        assert process.returncode == 0, f"inspect {what}: {err}\n{out}"
        replies[what] = json.loads(out.strip().splitlines()[-1])

    assert replies["ping"] == {ALPHA: {"ok": "pong"}, BETA: {"ok": "pong"}}
    for host, task_id in busy.items():
        active = replies["active"][f"worker@{host}"]
        assert task_id in [t["id"] for t in active], replies["active"]
        assert all(t["hostname"] == f"worker@{host}" for t in active)
    for host in netns.HOSTS:
        stats = replies["stats"][f"worker@{host}"]
        assert stats["pid"] == cluster.workers[host].pid
        assert stats["pool"]["max-concurrency"] == 2
        assert stats["broker"]["hostname"] == cluster.topology.address("redis")
    results = _succeeded(cluster.wait(list(busy.values()), timeout=60), cluster)
    assert [r["worker"] for r in results] == [ALPHA, BETA]


def test_alpha_rejoins_after_its_link_is_cut_without_a_restart(cluster):
    alpha = cluster.workers["alpha"]
    pid = alpha.pid
    log_offset = len(alpha.logfile.read_text(errors="replace"))
    cut = time.monotonic()
    cluster.topology.link("alpha", up=False)
    try:
        time.sleep(3)
        # queued for alpha while it is away: it must wait in Redis, not get lost
        during_cut = cluster.submit("query", "SELECT 42 AS answer", host="alpha")
        assert cluster.ping([ALPHA, BETA], timeout=2) == [BETA]
        # beta is unaffected
        on_beta = cluster.wait([cluster.submit("query", "SELECT 1", host="beta")], timeout=30)
        assert _succeeded(on_beta, cluster)[0]["worker"] == BETA
        assert cluster.state(during_cut)["state"] == "PENDING"
        time.sleep(max(0.0, cut + CUT_S - time.monotonic()))
    finally:
        cluster.topology.link("alpha", up=True)
    restored = time.monotonic()

    # the task queued during the cut completes on alpha
    first = _succeeded(cluster.wait([during_cut], timeout=60), cluster)[0]
    assert first["worker"] == ALPHA and first["rows"] == [[42]]
    queued_done = time.monotonic() - restored
    # alpha answers broadcasts again
    deadline = time.monotonic() + 60
    while ALPHA not in cluster.ping([ALPHA], timeout=1):
        assert time.monotonic() < deadline, f"alpha not answering pings\n{cluster.logs()}"
    pings_back = time.monotonic() - restored
    # and consumes new host-pinned work promptly
    after = [cluster.submit("query", f"SELECT {i}", host="alpha") for i in range(3)]
    submitted = time.monotonic()
    results = _succeeded(cluster.wait(after, timeout=60), cluster)
    assert {r["worker"] for r in results} == {ALPHA}
    new_work = time.monotonic() - submitted
    # same process: the worker reconnected by itself, nobody restarted it
    assert alpha.alive() and alpha.pid == pid
    stats = cluster.inspect("stats", destination=[ALPHA])
    assert stats[ALPHA]["pid"] == pid
    print(f"\n[multihost] link of alpha down {restored - cut:.1f}s; after restoring: task "
          f"queued during the cut done in {queued_done:.1f}s, ping answered after "
          f"{pings_back:.1f}s, 3 new pinned queries took {new_work:.1f}s; same pid {pid}")
    log = alpha.logfile.read_text(errors="replace")[log_offset:]
    for line in log.splitlines():
        if "WARNING" in line or "ERROR" in line or "Connect" in line:
            print(f"[multihost]   alpha: {line[:200]}")


def test_sigkilled_alpha_task_finishes_on_beta_once_alpha_stops_beating(cluster):
    """Redis has no real acks. With acks_late, a message a worker takes is moved to
    the ``unacked`` hash and only deleted when the task ends; beside it the worker's
    holder id (celeryapp/core/holders.py). SIGKILL of the worker's whole process group
    leaves nobody to ack or reject it (``task_reject_on_worker_lost`` needs a surviving
    main process), and its heartbeat key expires after TURBO_DEAD_WORKER_TIMEOUT (15 s):
    beta's holder thread, seeing it gone twice in a row, pushes the message back to the
    head of its queue - long before the visibility timeout (29 s here, 71 min by
    default), which stays only as a backstop.
    """
    alpha = cluster.workers["alpha"]
    # beta stops taking agent runs for a moment, so the shared queue's task goes to alpha
    reply = cluster.control("cancel_consumer", "agents", destination=[BETA])
    assert "ok" in reply[0][BETA], reply
    try:
        time.sleep(2)  # a BRPOP beta sent before the cancel (1 s server timeout) has ended
        submitted = time.monotonic()
        task_id = cluster.submit("agent", "[fake:sleep=6] outlive the worker")
        assert _wait_started(cluster, task_id)["hostname"] == ALPHA
        time.sleep(1)  # the agent CLI is running
        killed = time.monotonic()
        alpha.kill_group(signal.SIGKILL)  # main process and pool children at once
        assert alpha.process.wait(10) == -signal.SIGKILL
        # the agent CLI runs in its own session (runner: start_new_session) and
        # outlives the worker; a dead host would take it along, so do that too
        orphans = cluster.topology.kill_all("alpha")
    finally:
        reply = cluster.control("add_consumer", "agents", destination=[BETA])
    assert "ok" in reply[0][BETA], reply
    time.sleep(3)
    assert cluster.state(task_id)["state"] == "STARTED"  # alpha's, nobody runs it now

    outcome = cluster.wait([task_id], timeout=VISIBILITY + 60)[0]
    done = time.monotonic()
    assert outcome["state"] == "SUCCESS", f"{outcome}\n{cluster.logs()}"
    assert outcome["result"]["worker"] == BETA
    dead_after = SETTINGS.dead_worker_timeout
    # two sightings a quarter timeout apart, then the 6 s run: well under 30 s + the run
    assert done - killed <= 1.5 * dead_after + 6 + 10, done - killed
    print(f"\n[multihost] SIGKILL of alpha (orphans killed: {orphans}); the task finished "
          f"on beta {done - killed:.1f}s after the kill, {done - submitted:.1f}s after submit "
          f"(dead-worker timeout {dead_after:g}s, then the 6s run; visibility {VISIBILITY}s)")

    # a fresh alpha takes over its host queue again
    cluster.start_worker("alpha")
    result = _succeeded(cluster.wait([cluster.submit("query", "SELECT 7", host="alpha")],
                                     timeout=60), cluster)[0]
    assert result["worker"] == ALPHA and result["rows"] == [[7]]
    assert cluster.workers["alpha"].pid != alpha.pid
