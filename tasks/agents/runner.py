"""Run one agent CLI in its own process group, with its own deadline; no Celery here.

Killing only the CLI would leave its tools (shells, compilers, servers) running
(celery#1106), so the CLI starts a new session and every stop - deadline, soft
time limit, revoke - signals the whole group: TERM, a grace period, then KILL.
The leader is reaped only after the final KILL (``waitid(WNOWAIT)`` checks it), so
its pid, which is also the group id, cannot be reused while we still signal it.
The calling thread waits on the CLI's pidfd (or in short sleeps), so Celery's
signals (soft limit, ``revoke(terminate=True, signal="SIGUSR1")``) interrupt it at
once on prefork; on a threads pool, where no signal reaches a task, it also
watches the task's stop event (``stop=``) and a set event kills the group just the
same (:class:`~tasks.deadline.Cancelled`). The waiting thread also reads both pipes as
output comes (a chatty CLI never blocks on a full pipe), stdout through the profile's
reader (:mod:`.events`).
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

from celeryapp.core.agent_options import check_request

from ..deadline import Cancelled, StopEvent, current_stop
from ..errors import AgentError, AgentNotFound, InvalidRequest, TaskTimeout, TurboError
from .events import MAX_STDOUT_BYTES, Output
from .outcome import Outcome, tail
from .profiles import get_profile
from .sandbox import Caps, Room

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


def resolve_executable(executable: str, profile: str, env_var: str, path: str | None) -> str:
    found = shutil.which(executable, path=path)
    if found is None:
        raise AgentNotFound(f"{profile} executable {executable!r} not found or not executable "
                            f"on this worker; install it or set {env_var}")
    return found


def run(profile_name: str, prompt: str, options: Mapping[str, Any], *, executable: str,
        timeout: float, caps: Caps, cwd: Any = None, env: Mapping[str, str] | None = None,
        on_spawn: Callable[[int], None] | None = None,
        stop: StopEvent | None = None) -> dict:
    """Run ``prompt`` through a profile's CLI in its own room; return the parsed result
    or raise a classified error whose ``details`` keep the session, turns and cost.

    ``caps`` is the worker operator's policy (scratch directories, allowed modes,
    tools and directories, the environment the CLI sees, its own retries); ``env``
    the environment to pick from (default: the worker's). ``on_spawn(pid)`` is
    called once the CLI runs (``celery inspect running_agents``). ``stop`` (default:
    the calling thread's task's stop event) kills the process group once set and
    raises :class:`~tasks.deadline.Cancelled`."""
    profile = get_profile(profile_name)
    options = check_request(prompt, profile.name, options)
    if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
        raise InvalidRequest(f"cwd must be an absolute path, got {cwd!r}")
    cwd = None if cwd is None else os.fspath(cwd)
    caps.check(options, cwd)
    session = profile.session(options)
    run_env = caps.env(profile.env, profile.env_fixed(caps), env,
                       hidden=profile.hidden)
    path = resolve_executable(executable, profile.name, profile.env_var, run_env.get("PATH"))
    keep = bool(options.get("keep_workdir"))
    with Room(caps, cwd=cwd, keep=keep, session=session and (profile.name, session),
              resume=bool(options.get("resume"))) as room:
        if room.tmp is not None:
            run_env["TMPDIR"] = str(room.tmp)
        argv = profile.argv(path, options, session, str(room.path))
        out, err = profile.stdout_reader(), Output(keep_tail=True, limit=STDERR_KEEP_BYTES)
        where = {"profile": profile.name, "workdir": room.kept}
        try:
            done = run_process(argv, stdin=prompt.encode(), cwd=str(room.path), env=run_env,
                               timeout=timeout, kill_grace=caps.kill_grace,
                               what=f"{profile.name} agent run", shown=_shown(argv),
                               on_spawn=on_spawn, stop=stop, stdout=out, stderr=err)
        except TaskTimeout as exc:
            cut = Outcome(-1, out.text(), err.text(), getattr(out, "events", None))
            raise TaskTimeout(_with_tails(str(exc), cut),
                              {**profile.partial(cut), **where}) from None
        except (FileNotFoundError, PermissionError) as exc:  # e.g. a broken shebang
            raise AgentNotFound(f"{profile.name} executable {path!r} could not be started: "
                                f"{exc}; check {profile.env_var}") from None
        if done.exit_code in (126, 127) and SETPRIV_EXEC_FAILED in done.stderr:
            reason = done.stderr.split(SETPRIV_EXEC_FAILED, 1)[1].strip().splitlines()[0]
            raise AgentNotFound(f"{profile.name} executable {path!r} could not be started: "
                                f"{reason}; check {profile.env_var}")
        outcome = Outcome(done.exit_code, done.stdout, done.stderr, getattr(out, "events", None))
        try:
            result = profile.parse(outcome)
        except TurboError as exc:
            exc.add_details(**where, duration_s=round(done.duration_s, 3))
            raise
    result.update(where, exit_code=done.exit_code, duration_s=round(done.duration_s, 3),
                  pid=done.pid)
    return result


def _with_tails(text: str, outcome: Outcome) -> str:
    """A timeout's message with the last words of the CLI, which often say why
    (a CLI reconnecting to an API it cannot reach)."""
    parts = [text]
    if outcome.stderr.strip():
        parts.append(f"stderr: {tail(outcome.stderr)}")
    if outcome.stdout.strip():
        parts.append(f"stdout: {tail(outcome.stdout)}")
    return "\n".join(parts)


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
    ``overflow``; see :mod:`.events`); by default stdout's head and stderr's tail."""
    if stop is None:
        stop = current_stop()
    if stop is not None and stop.is_set():
        raise Cancelled(f"{what} stopped before it started")
    started = time.monotonic()
    stdin_mode = subprocess.PIPE if stdin is not None else subprocess.DEVNULL
    wrapper = _death_wrapper()
    proc = subprocess.Popen([*wrapper, *argv] if wrapper else argv, stdin=stdin_mode,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
                            start_new_session=True,
                            preexec_fn=None if wrapper else _die_with_parent)
    timed_out = cancelled = False
    if on_spawn is not None:
        on_spawn(proc.pid)
    pump = drains = None
    try:
        log.info("%s started, pid %d: %s", what, proc.pid, shown or argv[0])
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True,
                             name=f"agent-stdin-{proc.pid}").start()
        # the waiting thread reads both pipes itself, woken by them and by the CLI's
        # pidfd; without a pidfd, a thread per pipe and growing sleeps
        out = stdout if stdout is not None else Output(keep_tail=False, limit=MAX_STDOUT_BYTES)
        err = stderr if stderr is not None else Output(keep_tail=True, limit=STDERR_KEEP_BYTES)
        pump = _Pump.open(proc, out, err)
        if pump is not None:
            exited = pump.run(started + timeout, stop)
        else:
            drains = (_Drain(proc.stdout, out), _Drain(proc.stderr, err))
            exited = _wait_exit(proc.pid, started + timeout, stop)
        if not exited:
            if stop is not None and stop.is_set():
                cancelled = True
                log.warning("%s pid %d stopped on request; stopping its process group",
                            what, proc.pid)
            else:
                timed_out = True
                log.warning("%s pid %d passed its timeout of %gs; stopping its process group",
                            what, proc.pid, timeout)
            stop_group(proc, kill_grace)
    except BaseException as exc:  # soft time limit, revoke, KeyboardInterrupt
        log.warning("%s pid %d interrupted (%s); stopping its process group",
                    what, proc.pid, type(exc).__name__)
        stop_group(proc, kill_grace)
        if pump is not None:
            pump.close()
        raise
    finally:
        if proc.returncode is None:  # what the CLI left behind dies with the run
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    drained_by = time.monotonic() + DRAIN_JOIN_S
    if pump is not None:
        pump.drain(drained_by)
    else:
        for drain in drains:
            drain.join(max(0.0, drained_by - time.monotonic()))
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


def _shown(argv: list[str]) -> str:
    """The argv for logs, long values shortened (the prompt is never in argv)."""
    return " ".join(arg if len(arg) <= 120 else f"<{len(arg)} chars>" for arg in argv)
