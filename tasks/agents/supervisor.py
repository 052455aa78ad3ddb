"""Run one command in a process group of its own, under a deadline; no Celery here.

Killing only the command would leave what it started (shells, compilers, servers)
running (celery#1106), so it starts a new session and every stop - deadline, soft
time limit, revoke - signals the whole group: TERM, a grace period, then KILL.
The leader is reaped only after the final KILL (``waitid(WNOWAIT)`` checks it), so
its pid, which is also the group id, cannot be reused while we still signal it.
The calling thread waits on the leader's pidfd (or in short sleeps), so Celery's
signals (soft limit, ``revoke(terminate=True, signal="SIGUSR1")``) interrupt it at
once on prefork; on a threads pool, where no signal reaches a task, it also
watches the task's stop event (``stop=``) and a set event kills the group just the
same (:class:`~tasks.deadline.Cancelled`). The waiting thread also reads both pipes as
output comes (a chatty command never blocks on a full pipe). A command whose worker
dies (SIGKILL, OOM) is killed with it (``PR_SET_PDEATHSIG``).

The agent runner (:mod:`.runner`) runs the agent CLIs through :func:`run_process`.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..deadline import Cancelled, StopEvent, current_stop
from ..errors import AgentError, TaskTimeout
from .events import MAX_STDOUT_BYTES, Output

log = logging.getLogger(__name__)

DEFAULT_KILL_GRACE_S = 5.0
STDERR_KEEP_BYTES = 64 * 1024
DRAIN_JOIN_S = 2.0  # for both pipes, once the group is dead
STOP_POLL_S = 0.2  # how often a waiting run looks at its stop event (threads pool)
EXIT_POLL_MAX_S = 0.05  # without a pidfd: the longest sleep between exit checks


@dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str
    pid: int
    duration_s: float


def run_process(argv: list[str], *, stdin: bytes | None = None, cwd: str | None = None,
                env: Mapping[str, str] | None = None, timeout: float,
                kill_grace: float = DEFAULT_KILL_GRACE_S, what: str = "agent run",
                shown: str | None = None,
                on_spawn: Callable[[int], None] | None = None,
                stop: StopEvent | None = None, stdout: Any = None,
                stderr: Output | None = None) -> Completed:
    """Run ``argv`` in a new session; kill its process group on deadline, on ``stop``
    (default: the calling thread's task's stop event) or on interruption.

    ``stdout``/``stderr`` take the output as it comes (``add(chunk)``, ``text()``,
    ``overflow``; see :mod:`.events`); by default stdout's head and stderr's tail.
    ``what`` names the run in logs and errors: TaskTimeout past ``timeout``, Cancelled
    on ``stop``, AgentError when stdout overflowed."""
    if stop is None:
        stop = current_stop()
    if stop is not None and stop.is_set():
        raise Cancelled(f"{what} stopped before it started")
    started = time.monotonic()
    proc = _spawn(argv, stdin is not None, cwd, env)
    timed_out = cancelled = False
    if on_spawn is not None:
        on_spawn(proc.pid)
    pipes = None
    try:
        log.info("%s started, pid %d: %s", what, proc.pid, shown or argv[0])
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True,
                             name=f"agent-stdin-{proc.pid}").start()
        out = stdout if stdout is not None else Output(keep_tail=False, limit=MAX_STDOUT_BYTES)
        err = stderr if stderr is not None else Output(keep_tail=True, limit=STDERR_KEEP_BYTES)
        pipes = _open_pipes(proc, out, err)
        if not pipes.run(started + timeout, stop):
            if stop is not None and stop.is_set():
                cancelled = True
                log.warning("%s pid %d stopped on request; stopping its process group",
                            what, proc.pid)
            else:
                timed_out = True
                log.warning("%s pid %d passed its timeout of %gs; stopping its process group",
                            what, proc.pid, timeout)
            term_group_then_kill(proc, kill_grace)
    except BaseException as exc:  # soft time limit, revoke, KeyboardInterrupt
        log.warning("%s pid %d interrupted (%s); stopping its process group",
                    what, proc.pid, type(exc).__name__)
        term_group_then_kill(proc, kill_grace)
        if pipes is not None:
            pipes.close()
        raise
    finally:
        if proc.returncode is None:  # what the command left behind dies with the run
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    pipes.drain(time.monotonic() + DRAIN_JOIN_S)
    finish = getattr(out, "finish", None)
    if finish is not None:  # a last event line without its newline
        finish()
    elapsed = time.monotonic() - started
    log.info("%s pid %d ended with exit code %s after %.2fs", what, proc.pid, proc.returncode,
             elapsed)
    if cancelled:
        raise Cancelled(f"{what} stopped on request; its process group was killed after "
                        f"{elapsed:.1f}s")
    if timed_out:
        raise TaskTimeout(f"{what} exceeded its timeout of {timeout:g}s; its process group "
                          f"was killed after {elapsed:.1f}s")
    if out.overflow:
        raise AgentError(f"{what} printed more than {MAX_STDOUT_BYTES} bytes on stdout")
    return Completed(proc.returncode, out.text(), err.text(), proc.pid, elapsed)


def _spawn(argv: list[str], stdin: bool, cwd: str | None,
           env: Mapping[str, str] | None) -> subprocess.Popen:
    """Start ``argv`` in a new session, killed if its worker dies (see
    :func:`_death_wrapper`); stdout and stderr piped, stdin piped only if ``stdin``."""
    wrapper = _death_wrapper()
    return subprocess.Popen([*wrapper, *argv] if wrapper else argv,
                            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
                            start_new_session=True,
                            preexec_fn=None if wrapper else _die_with_parent)


def _open_pipes(proc: subprocess.Popen, out: Any, err: Any) -> _Pump | _Drains:
    """What serves the pipes and sees the exit: the waiting thread itself, woken by the
    pipes and the leader's pidfd (:class:`_Pump`); without a pidfd, a thread per pipe
    and growing sleeps (:class:`_Drains`)."""
    return _Pump.open(proc, out, err) or _Drains(proc, out, err)


def _libc_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# resolved once here: the child of a threaded worker should run as little Python as it can
_PRCTL = _libc_prctl()
PR_SET_PDEATHSIG = 1


SETPRIV_EXEC_FAILED = "setpriv: failed to execute"


@lru_cache(maxsize=1)
def _death_wrapper() -> tuple[str, ...]:
    """``setpriv --pdeathsig KILL --`` (util-linux >= 2.33) in front of the CLI: it sets
    PR_SET_PDEATHSIG and execs the CLI in the same process, so the worker can spawn
    without ``preexec_fn``. A ``preexec_fn`` forces ``fork()`` instead of ``vfork()``:
    a worker with many threads and a few hundred MB then copies its page tables and
    stalls every thread on each spawn (256 runs at once on a threads pool: 1.5 s of
    system CPU instead of 0.2). Empty where setpriv is missing: ``_die_with_parent``."""
    found = shutil.which("setpriv")
    if found is None:
        return ()
    wrapper = (found, "--pdeathsig", "KILL", "--")
    try:
        works = subprocess.run([*wrapper, "true"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        works = False
    return wrapper if works else ()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL the CLI if the worker that started it dies
    (SIGKILL, OOM), so a lost task's agent does not run on unseen while the task is
    redelivered elsewhere. (The "parent" is the thread that forked: the task's thread,
    which waits for the CLI.) Linux only; elsewhere a no-op. What :func:`_death_wrapper`
    does where setpriv exists."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))


def term_group_then_kill(proc: subprocess.Popen, grace: float) -> None:
    """TERM the whole group, give the leader ``grace`` seconds, then KILL the group and
    reap the leader. (:func:`celeryapp.core.processes.term_leader_then_kill_group` TERMs
    the leader only.)"""
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


def _exited(pid: int) -> bool:
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped
        return True


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when ``pid`` exits (Linux >= 5.3), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # older kernel, seccomp, already reaped
        return None


def _wait_exit(pid: int, deadline: float, stop: StopEvent | None = None) -> bool:
    """True once ``pid`` has exited (left unreaped); False at ``deadline`` or once
    ``stop`` is set. Blocks on the pidfd where there is one (signal handlers run
    during the wait either way), else sleeps in growing steps."""
    fd = _pidfd(pid)
    poller = None
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
    delay = 0.001
    try:
        while True:
            if _exited(pid):
                return True
            if stop is not None and stop.is_set():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if poller is not None:
                pause = remaining if stop is None else min(remaining, STOP_POLL_S)
                poller.poll(max(1, int(pause * 1000)))
            else:
                pause = min(delay, remaining)
                if stop is None:
                    time.sleep(pause)
                else:
                    stop.wait(pause)
                delay = min(delay * 2, EXIT_POLL_MAX_S)
    finally:
        if fd is not None:
            os.close(fd)


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


class _Pump:
    """Both pipes and the exit of one CLI, served by the thread that waits for it.

    One ``poll`` over stdout, stderr and the CLI's pidfd: output is read as it comes
    (a chatty CLI never blocks on a full pipe) and the exit is seen at once, with no
    thread per pipe and no sleeping in steps - on a threads pool with hundreds of
    runs that is hundreds of threads and thousands of wake-ups a second fewer. The
    stop event (threads pool) is looked at every ``STOP_POLL_S``; a signal (prefork)
    interrupts the poll at once."""

    def __init__(self, proc: subprocess.Popen, pidfd: int, out: Any, err: Any):
        self.proc, self.pidfd = proc, pidfd
        self.out, self.err = out, err
        self.pipes = {proc.stdout.fileno(): (proc.stdout, self.out),
                      proc.stderr.fileno(): (proc.stderr, self.err)}
        self.poller = select.poll()
        for fd in (*self.pipes, pidfd):
            self.poller.register(fd, select.POLLIN)

    @classmethod
    def open(cls, proc: subprocess.Popen, out: Any, err: Any) -> _Pump | None:
        pidfd = _pidfd(proc.pid)
        return None if pidfd is None else cls(proc, pidfd, out, err)

    def run(self, deadline: float, stop: StopEvent | None) -> bool:
        """Serve the pipes until the CLI exits (True: left unreaped), ``deadline`` passes
        or ``stop`` is set (False)."""
        while True:
            if stop is not None and stop.is_set():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            pause = remaining if stop is None else min(remaining, STOP_POLL_S)
            for fd, _ in self.poller.poll(max(1, int(pause * 1000))):
                if fd == self.pidfd:
                    if _exited(self.proc.pid):
                        self._forget_pidfd()
                        return True
                else:
                    self._read(fd)

    def drain(self, deadline: float) -> None:
        """After the end (the group is dead): read what is left, up to ``deadline``."""
        self._forget_pidfd()
        try:
            while self.pipes:
                remaining = deadline - time.monotonic()
                if remaining <= 0:  # a process outside the group still holds a pipe
                    log.warning("agent output pipe still open after the run; using what "
                                "was read")
                    return
                for fd, _ in self.poller.poll(max(1, int(remaining * 1000))):
                    self._read(fd)
        finally:
            self.close()

    def _read(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        if chunk:
            self.pipes[fd][1].add(chunk)
        else:  # EOF: every writer closed it
            self.poller.unregister(fd)
            self.pipes.pop(fd)[0].close()

    def _forget_pidfd(self) -> None:
        if self.pidfd is not None:
            self.poller.unregister(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None

    def close(self) -> None:
        self._forget_pidfd()
        for pipe, _ in self.pipes.values():
            pipe.close()
        self.pipes.clear()


class _Drains:
    """Where there is no pidfd: :class:`_Pump`'s interface over a thread per pipe
    (:class:`_Drain`), the waiting thread sleeping between exit checks."""

    def __init__(self, proc: subprocess.Popen, out: Any, err: Any):
        self.pid = proc.pid
        self.drains = (_Drain(proc.stdout, out), _Drain(proc.stderr, err))

    def run(self, deadline: float, stop: StopEvent | None) -> bool:
        """True once the leader has exited (left unreaped); False at ``deadline`` or once
        ``stop`` is set."""
        return _wait_exit(self.pid, deadline, stop)

    def drain(self, deadline: float) -> None:
        for drain in self.drains:
            drain.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        """Nothing to do: each thread closes its pipe at EOF."""


class _Drain:
    """Read a pipe to EOF in a thread into ``sink`` (where there is no pidfd: the
    waiting thread then only sleeps and checks)."""

    def __init__(self, pipe, sink: Any):
        self._pipe, self._sink = pipe, sink
        self._thread = threading.Thread(target=self._read, daemon=True, name="agent-drain")
        self._thread.start()

    def _read(self) -> None:
        fd = self._pipe.fileno()
        try:
            while chunk := os.read(fd, 65536):
                self._sink.add(chunk)
        finally:
            self._pipe.close()  # only this thread touches the pipe

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():  # a process outside the group still holds the pipe
            log.warning("agent output pipe still open after the run; using what was read")
