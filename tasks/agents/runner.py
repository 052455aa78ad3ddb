"""Run one agent request through its profile's CLI; no Celery here.

A checked request (:class:`~.request.AgentRequest`) becomes a run: the profile picks
the CLI's environment (:mod:`.sandbox`: allowlisted, the operator's additions) and its
argv (the prompt goes on stdin, never in argv), the run gets its room (the caller's
``cwd``, a kept session's directory or a scratch directory removed afterwards), the
CLI runs in a process group of its own under the run's deadline (:mod:`.supervisor`),
its stdout read as events by the profile's reader (:mod:`.events`), and the profile
turns the finished process into the result or a classified error (:mod:`.outcome`)
whose ``details`` keep the session, turns and cost; a timeout's message ends with the
tail of what the CLI printed.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping

from ..deadline import StopEvent
from ..errors import AgentNotFound, TaskTimeout, TurboError
from .events import Output
from .outcome import Outcome, tail
from .request import AgentRequest
from .sandbox import Room
from .supervisor import SETPRIV_EXEC_FAILED, STDERR_KEEP_BYTES, run_process


def resolve_executable(executable: str, profile: str, env_var: str, path: str | None) -> str:
    found = shutil.which(executable, path=path)
    if found is None:
        raise AgentNotFound(f"{profile} executable {executable!r} not found or not executable "
                            f"on this worker; install it or set {env_var}")
    return found


def run(request: AgentRequest, *, executable: str, timeout: float,
        env: Mapping[str, str] | None = None,
        on_spawn: Callable[[int], None] | None = None,
        stop: StopEvent | None = None) -> dict:
    """Run a checked ``request`` (:meth:`AgentRequest.checked`) through its profile's
    CLI in its own room; return the parsed result or raise a classified error whose
    ``details`` keep the session, turns and cost.

    ``request.caps`` is the worker operator's policy (scratch directories, the
    environment the CLI sees, its own retries, the kill grace); ``env`` the
    environment to pick from (default: the worker's). ``on_spawn(pid)`` is called once
    the CLI runs (``celery inspect running_agents``). ``stop`` (default: the calling
    thread's task's stop event) kills the process group once set and raises
    :class:`~tasks.deadline.Cancelled`."""
    profile, options, caps = request.profile, request.options, request.caps
    session = profile.session(options)
    run_env = caps.env(profile.env, profile.env_fixed(caps), env,
                       hidden=profile.hidden)
    path = resolve_executable(executable, profile.name, profile.env_var, run_env.get("PATH"))
    keep = bool(options.get("keep_workdir"))
    with Room(caps, cwd=request.cwd, keep=keep, session=session and (profile.name, session),
              resume=bool(options.get("resume"))) as room:
        if room.tmp is not None:
            run_env["TMPDIR"] = str(room.tmp)
        argv = profile.argv(path, options, session, str(room.path))
        out, err = profile.stdout_reader(), Output(keep_tail=True, limit=STDERR_KEEP_BYTES)
        where = {"profile": profile.name, "workdir": room.kept}
        try:
            done = run_process(argv, stdin=request.prompt.encode(), cwd=str(room.path),
                               env=run_env, timeout=timeout, kill_grace=caps.kill_grace,
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


def _shown(argv: list[str]) -> str:
    """The argv for logs, long values shortened (the prompt is never in argv)."""
    return " ".join(arg if len(arg) <= 120 else f"<{len(arg)} chars>" for arg in argv)
