"""Run one agent CLI in its own process group, with its own deadline; no Celery here.

Killing only the CLI would leave its tools (shells, compilers, servers) running
(celery#1106), so the CLI starts a new session and every stop - deadline, soft
time limit, revoke - signals the whole group: TERM, a grace period, then KILL.
The leader is reaped only after the final KILL (``waitid(WNOWAIT)`` polls it), so
its pid, which is also the group id, cannot be reused while we still signal it.
The calling thread waits in short sleeps, so Celery's signals (soft limit,
``revoke(terminate=True, signal="SIGUSR1")``) interrupt it at once; pipes are
drained by threads so a chatty CLI never blocks on a full pipe.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..errors import AgentError, AgentNotFound, InvalidRequest, TaskTimeout
from .profiles import Outcome, get_profile

log = logging.getLogger(__name__)

DEFAULT_KILL_GRACE_S = 5.0
MAX_STDOUT_BYTES = 64 * 1024 * 1024
STDERR_KEEP_BYTES = 64 * 1024
DRAIN_JOIN_S = 2.0  # for both pipes, once the group is dead
# Turbo's own settings (the broker URL and its password among them) are none of the
# agent's business.
HIDDEN_ENV_PREFIXES = ("TURBO_",)


@dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str
    pid: int
    duration_s: float


def agent_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment minus Turbo's own settings."""
    base = os.environ if base is None else base
    return {key: value for key, value in base.items() if not key.startswith(HIDDEN_ENV_PREFIXES)}


def resolve_executable(executable: str, profile: str, env_var: str, path: str | None) -> str:
    found = shutil.which(executable, path=path)
    if found is None:
        raise AgentNotFound(f"{profile} executable {executable!r} not found or not executable "
                            f"on this worker; install it or set {env_var}")
    return found


def check_cwd(cwd: Any) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, (str, os.PathLike)) or not os.path.isabs(cwd):
        raise InvalidRequest(f"cwd must be an absolute path, got {cwd!r}")
    if not os.path.isdir(cwd):
        raise InvalidRequest(f"cwd {os.fspath(cwd)!r} is not a directory on this worker")
    return os.fspath(cwd)


def run(profile_name: str, prompt: str, options: Mapping[str, Any], *, executable: str,
        timeout: float, cwd: Any = None, kill_grace: float = DEFAULT_KILL_GRACE_S,
        env: Mapping[str, str] | None = None,
        on_spawn: Callable[[int], None] | None = None) -> dict:
    """Run ``prompt`` through a profile's CLI; return the parsed result or raise.

    ``on_spawn(pid)`` is called once the CLI runs (the worker records it for
    ``celery inspect running_agents``)."""
    profile = get_profile(profile_name)
    profile.check(prompt, options)
    cwd = check_cwd(cwd)
    env = agent_env() if env is None else dict(env)
    path = resolve_executable(executable, profile.name, profile.env_var, env.get("PATH"))
    invocation = profile.invocation(path, prompt, options)
    try:
        done = run_process(invocation.argv, stdin=invocation.stdin, cwd=cwd, env=env,
                           timeout=timeout, kill_grace=kill_grace,
                           what=f"{profile.name} agent run", shown=_shown(invocation.argv, prompt),
                           on_spawn=on_spawn)
    except (FileNotFoundError, PermissionError) as exc:  # e.g. a broken shebang
        raise AgentNotFound(f"{profile.name} executable {path!r} could not be started: {exc}; "
                            f"check {profile.env_var}") from None
    result = profile.parse(Outcome(done.exit_code, done.stdout, done.stderr))
    result.update(profile=profile.name, exit_code=done.exit_code,
                  duration_s=round(done.duration_s, 3), pid=done.pid)
    return result


def run_process(argv: list[str], *, stdin: bytes | None = None, cwd: str | None = None,
                env: Mapping[str, str] | None = None, timeout: float,
                kill_grace: float = DEFAULT_KILL_GRACE_S, what: str = "agent run",
                shown: str | None = None,
                on_spawn: Callable[[int], None] | None = None) -> Completed:
    """Run ``argv`` in a new session; kill its process group on deadline or interruption."""
    started = time.monotonic()
    stdin_mode = subprocess.PIPE if stdin is not None else subprocess.DEVNULL
    proc = subprocess.Popen(argv, stdin=stdin_mode,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent)
    timed_out = False
    if on_spawn is not None:
        on_spawn(proc.pid)
    try:
        log.info("%s started, pid %d: %s", what, proc.pid, shown or argv[0])
        out = _Drain(proc.stdout, keep_tail=False, limit=MAX_STDOUT_BYTES)
        err = _Drain(proc.stderr, keep_tail=True, limit=STDERR_KEEP_BYTES)
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True,
                             name=f"agent-stdin-{proc.pid}").start()
        if not _wait_exit(proc.pid, started + timeout):
            timed_out = True
            log.warning("%s pid %d passed its timeout of %gs; stopping its process group",
                        what, proc.pid, timeout)
            stop_group(proc, kill_grace)
    except BaseException as exc:  # soft time limit, revoke, KeyboardInterrupt
        log.warning("%s pid %d interrupted (%s); stopping its process group",
                    what, proc.pid, type(exc).__name__)
        stop_group(proc, kill_grace)
        raise
    finally:
        if proc.returncode is None:  # what the CLI left behind dies with the run
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    drained_by = time.monotonic() + DRAIN_JOIN_S
    for drain in (out, err):
        drain.join(max(0.0, drained_by - time.monotonic()))
    elapsed = time.monotonic() - started
    log.info("%s pid %d ended with exit code %s after %.2fs", what, proc.pid, proc.returncode,
             elapsed)
    if timed_out:
        raise TaskTimeout(f"{what} exceeded its timeout of {timeout:g}s; its process group "
                          f"was killed after {elapsed:.1f}s")
    if out.overflow:
        raise AgentError(f"{what} printed more than {MAX_STDOUT_BYTES} bytes on stdout")
    return Completed(proc.returncode, out.text(), err.text(), proc.pid, elapsed)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL the CLI if the worker process that started
    it dies (SIGKILL, OOM), so a lost task's agent does not run on unseen while the
    task is redelivered elsewhere. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """TERM the group, give the leader ``grace`` seconds, then KILL the group and reap."""
    if proc.returncode is not None:
        return
    try:
        _kill_group(proc.pid, signal.SIGTERM)
        _wait_exit(proc.pid, time.monotonic() + grace)
    finally:  # also when a second signal interrupts the grace period
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_exit(pid: int, deadline: float) -> bool:
    """True once ``pid`` has exited (left unreaped), False at ``deadline``."""
    delay = 0.001
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:  # already reaped
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))  # signal handlers run here
        delay = min(delay * 2, 0.05)


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError):
        pass  # the CLI stopped reading; its exit status tells the story
    finally:
        try:
            pipe.close()
        except OSError:
            pass


class _Drain:
    """Read a pipe to EOF in a thread; keep its head (stdout) or its tail (stderr)."""

    def __init__(self, pipe, *, keep_tail: bool, limit: int):
        self._pipe, self._keep_tail, self._limit = pipe, keep_tail, limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.overflow = False
        self._thread = threading.Thread(target=self._read, daemon=True, name="agent-drain")
        self._thread.start()

    def _read(self) -> None:
        fd = self._pipe.fileno()
        try:
            while chunk := os.read(fd, 65536):
                if self.overflow:
                    continue  # past the cap: read on so the CLI never blocks, keep nothing
                self._chunks.append(chunk)
                self._size += len(chunk)
                if self._size > self._limit:
                    self._trim()
        finally:
            self._pipe.close()  # only this thread touches the pipe

    def _trim(self) -> None:
        data = b"".join(self._chunks)
        if self._keep_tail:
            data = data[-self._limit:]
        else:
            self.overflow, data = True, data[:self._limit]
        self._chunks, self._size = [data], len(data)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():  # a process outside the group still holds the pipe
            log.warning("agent output pipe still open after the run; using what was read")

    def text(self) -> str:
        return b"".join(list(self._chunks)).decode("utf-8", errors="replace")


def _shown(argv: list[str], prompt: str) -> str:
    """The argv for logs: the prompt and long values shortened, never printed."""
    def show(arg: str) -> str:
        if arg.endswith(prompt) and len(arg) - len(prompt) <= len("--prompt="):
            return f"<prompt: {len(prompt)} chars>"
        return arg if len(arg) <= 120 else f"<{len(arg)} chars>"
    return " ".join(show(arg) for arg in argv)
