"""Linux network namespaces as "hosts" for the multi-host test (tests/system/test_multihost.py).

Topology, all of it inside namespaces of our own (the root namespace, i.e. the
machine's network, is never touched)::

    <prefix>-redis : lo, br0 = <net>.1/24 (bridge), v-alpha, v-beta (bridge ports)
    <prefix>-alpha : lo, eth0 = <net>.11/24  (veth peer of v-alpha)
    <prefix>-beta  : lo, eth0 = <net>.12/24  (veth peer of v-beta)

``<prefix>`` is ``turbo-mh-<pid>-<random hex>`` so parallel sessions never
collide, ``<net>`` is ``10.213.<random>`` (private, and only ever contacted
from inside these namespaces anyway).

The pieces:
  * :class:`Topology` builds and destroys the namespaces, runs commands in them
    (``ip netns exec``), cuts and restores a host's link, lists the processes
    left in a namespace and kills them;
  * :class:`NetnsRedis`: a :class:`~celeryapp.dev.localredis.LocalRedis` whose
    server runs in the redis namespace, bound to the bridge address;
  * :class:`NetnsWorker`: ``python -m celeryapp.worker.host`` in a host namespace
    (``ip netns exec`` execs in place, so the Popen pid *is* the celery main
    process and, with its own session, the process group id);
  * :class:`NetnsClient`: the test process cannot reach the bridge address, so
    the client side (submit, wait, state, control) is one long-lived Python
    process in the redis namespace that answers JSON requests on stdin/stdout;
    ``python tests/support/netns.py client`` is its entry point.
"""
from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

if not __package__:  # run as `python tests/support/netns.py client`: put tests/ on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.helpers import gone  # noqa: E402  (tests/ is on pytest's pythonpath)

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("alpha", "beta")
REPLY_MARK = "@@turbo-netns@@ "


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
    return result


def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (no side effects), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only; multi-host test skipped"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns); multi-host test skipped"
    if not shutil.which("ip"):
        return "the ip command (iproute2) is missing; multi-host test skipped"
    return None


@dataclass
class Topology:
    prefix: str = field(default_factory=lambda: f"turbo-mh-{os.getpid()}-{secrets.token_hex(3)}")
    net: str = field(default_factory=lambda: f"10.213.{secrets.randbelow(254) + 1}")
    hosts: tuple[str, ...] = HOSTS
    created: list[str] = field(default_factory=list)

    # --- names and addresses ---------------------------------------------------
    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def address(self, role: str) -> str:
        if role == "redis":
            return f"{self.net}.1"
        return f"{self.net}.{11 + self.hosts.index(role)}"

    @staticmethod
    def bridge_port(host: str) -> str:
        return f"v-{host}"  # lives in the redis namespace, so the short name is unique

    @property
    def roles(self) -> tuple[str, ...]:
        return ("redis", *self.hosts)

    # --- build -----------------------------------------------------------------
    def create(self) -> Topology:
        """Build everything; raise NamespacesUnavailable if ``ip netns add`` is refused."""
        first = _ip("netns", "add", self.ns("redis"), check=False)
        if first.returncode != 0:
            raise NamespacesUnavailable(
                f"ip netns add failed ({first.stderr.strip()}); multi-host test skipped")
        self.created.append(self.ns("redis"))
        try:
            for host in self.hosts:
                _ip("netns", "add", self.ns(host))
                self.created.append(self.ns(host))
            for role in self.roles:
                _ip("-n", self.ns(role), "link", "set", "lo", "up")
            redis_ns = self.ns("redis")
            _ip("-n", redis_ns, "link", "add", "br0", "type", "bridge")
            _ip("-n", redis_ns, "addr", "add", f"{self.address('redis')}/24", "dev", "br0")
            _ip("-n", redis_ns, "link", "set", "br0", "up")
            for host in self.hosts:
                port = self.bridge_port(host)
                # both ends are created inside our namespaces, never in the root one
                _ip("-n", redis_ns, "link", "add", port, "type", "veth",
                    "peer", "name", "eth0", "netns", self.ns(host))
                _ip("-n", redis_ns, "link", "set", port, "master", "br0")
                _ip("-n", redis_ns, "link", "set", port, "up")
                _ip("-n", self.ns(host), "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
                _ip("-n", self.ns(host), "link", "set", "eth0", "up")
        except BaseException:
            self.destroy(check=False)
            raise
        return self

    # --- run things inside -----------------------------------------------------
    def exec_argv(self, role: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(role), *argv]

    def run(self, role: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("cwd", ROOT)
        return subprocess.run(self.exec_argv(role, argv), **kwargs)

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) a host's cable at the switch: its bridge port goes down,
        the host's own eth0 stays configured but loses carrier."""
        _ip("-n", self.ns("redis"), "link", "set", self.bridge_port(host),
            "up" if up else "down")

    def pids(self, role: str) -> list[int]:
        result = _ip("netns", "pids", self.ns(role), check=False)
        return [int(p) for p in result.stdout.split() if p.strip().isdigit()]

    def kill_all(self, role: str, timeout: float = 10.0) -> list[int]:
        """SIGKILL every process in the namespace; return the pids that were there."""
        found = self.pids(role)
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in self.pids(role) if not gone(p)]
            if not pids:
                return found
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} survive in {self.ns(role)}")
            time.sleep(0.1)

    # --- tear down ---------------------------------------------------------------
    def destroy(self, check: bool = True) -> None:
        """Kill what is left inside, delete the namespaces (and with them the bridge
        and the veth pairs); with ``check``, raise if anything remains."""
        problems = []
        listed = _ip("netns", "list", check=False).stdout
        for name in list(reversed(self.created)):
            role = name[len(self.prefix) + 1:]
            try:
                self.kill_all(role)
            except RuntimeError as exc:
                problems.append(str(exc))
            if name in listed:
                result = _ip("netns", "del", name, check=False)
                if result.returncode != 0:
                    problems.append(f"ip netns del {name}: {result.stderr.strip()}")
            self.created.remove(name)
        left = [n for n in _ip("netns", "list", check=False).stdout.split()
                if n.startswith(self.prefix)]
        if left:
            problems.append(f"namespaces left: {left}")
        if check and problems:
            raise RuntimeError("; ".join(problems))


class NamespacesUnavailable(RuntimeError):
    pass


def _kill_group(process: subprocess.Popen | None, first=signal.SIGTERM,
                timeout: float = 15.0) -> None:
    if not process:
        return
    if process.poll() is None:
        try:
            os.killpg(process.pid, first)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children left in the group
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(5)


@dataclass
class NetnsRedis:
    """redis-server in the redis namespace, bound to the bridge address, with a password."""

    topology: Topology
    workdir: Path
    password: str = field(default_factory=lambda: secrets.token_hex(12), repr=False)
    port: int = 6379  # the namespace is private: no other server can hold the port
    process: subprocess.Popen | None = None

    @property
    def config(self):
        from celeryapp.dev.localredis import LocalRedis

        return LocalRedis(workdir=self.workdir, password=self.password, port=self.port,
                          host=self.topology.address("redis"))

    @property
    def url(self) -> str:
        return self.config.url

    def start(self, timeout: float = 20.0) -> NetnsRedis:
        from celeryapp.dev.localredis import find_redis_server

        local = self.config
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"
        conf.write_text(local.config_text())
        conf.chmod(0o600)
        log = self.workdir / "redis.log"
        self.process = subprocess.Popen(
            self.topology.exec_argv("redis", [find_redis_server(), str(conf)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {tail}")
            if log.exists() and "Ready to accept connections" in log.read_text(errors="replace"):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server in {self.topology.ns('redis')} not ready in {timeout}s")

    def stop(self) -> None:
        _kill_group(self.process)


@dataclass
class NetnsWorker:
    """``python -m celeryapp.worker.host`` (worker@<host>) inside the host's namespace."""

    topology: Topology
    host: str
    env: dict[str, str] = field(repr=False)
    logfile: Path
    process: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return f"worker@{self.host}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> NetnsWorker:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as out:
            out.write(f"\n--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                self.topology.exec_argv(self.host, [sys.executable, "-m", "celeryapp.worker.host"]),
                env={**self.env, "TURBO_HOST": self.host}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill_group(self, sig=signal.SIGKILL) -> None:
        """Signal the worker's whole process group: the main process and its pool children."""
        os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        _kill_group(self.process)

    def log_tail(self, size: int = 4000) -> str:
        if not self.logfile.exists():
            return ""
        return f"--- {self.logfile.name} ---\n" + self.logfile.read_text(errors="replace")[-size:]


class ClientError(RuntimeError):
    pass


class NetnsClient:
    """A Celery client living in the redis namespace, driven by JSON lines."""

    def __init__(self, topology: Topology, env: dict[str, str], logfile: Path):
        self.topology = topology
        self.env = env
        self.logfile = logfile
        self.process: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()
        self._lock = threading.Lock()

    def start(self) -> NetnsClient:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        err = open(self.logfile, "ab")
        self.process = subprocess.Popen(
            self.topology.exec_argv("redis", [sys.executable, str(Path(__file__).resolve()),
                                              "client"]),
            env=self.env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err, text=True, bufsize=1, start_new_session=True)
        err.close()
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith(REPLY_MARK):
                self._replies.put(json.loads(line[len(REPLY_MARK):]))
        self._replies.put({"error": "client process ended"})

    def call(self, op: str, *, reply_timeout: float | None = None, **args):
        """Run ``op`` in the client; return its answer or raise ClientError.

        ``reply_timeout`` bounds the wait for the answer (default: the op's own
        ``timeout`` argument plus 30 s, else 60 s)."""
        timeout = reply_timeout or float(args.get("timeout") or 30.0) + 30.0
        with self._lock:
            if self.process.poll() is not None:
                raise ClientError(f"client process ended ({self.process.returncode}): "
                                  f"{self.log_tail()}")
            self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.process.stdin.flush()
            try:
                reply = self._replies.get(timeout=timeout)
            except queue.Empty:
                raise ClientError(f"no answer to {op} in {timeout}s") from None
        if "error" in reply:
            raise ClientError(f"{op}: {reply['error']}")
        return reply["ok"]

    def log_tail(self, size: int = 3000) -> str:
        return self.logfile.read_text(errors="replace")[-size:] if self.logfile.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _kill_group(self.process, timeout=5)


# --- the client process (runs in the redis namespace) ------------------------------

def _json_safe(value):
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _client_ops():
    from celery.result import AsyncResult

    from celeryapp import app
    from tasks.agent import run_agent
    from tasks.query import run_query

    tasks = {"query": run_query, "agent": run_agent}

    def submit(task, args=(), kwargs=None):
        return tasks[task].delay(*args, **(kwargs or {})).id

    def outcome(task_id):
        result = AsyncResult(task_id, app=app)
        state = result.state
        return {"id": task_id, "state": state, "result": _json_safe(result.result)}

    def wait(ids, timeout=60.0):
        deadline = time.monotonic() + timeout
        out = []
        for task_id in ids:
            result = AsyncResult(task_id, app=app)
            try:
                result.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False,
                           interval=0.2)
            except Exception:  # TimeoutError: report the state it is in
                pass
            out.append(outcome(task_id))
        return out

    def ping(destination=None, timeout=1.0):
        replies = app.control.ping(destination=destination, timeout=timeout)
        return sorted(name for reply in replies for name in reply)

    def control(method, args=(), destination=None, timeout=5.0):
        func = getattr(app.control, method)
        return _json_safe(func(*args, destination=destination, reply=True, timeout=timeout))

    def inspect(method, destination=None, timeout=5.0):
        inspector = app.control.inspect(destination=destination, timeout=timeout)
        return _json_safe(getattr(inspector, method)())

    return {"submit": submit, "wait": wait, "state": outcome, "ping": ping, "control": control,
            "inspect": inspect}


def client_main() -> None:
    ops = _client_ops()
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to the log, not the protocol
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = {"ok": ops[request.pop("op")](**request)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(REPLY_MARK + json.dumps(reply, default=repr) + "\n")
        out.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        client_main()
    else:
        sys.exit(f"usage: {sys.argv[0]} client")
