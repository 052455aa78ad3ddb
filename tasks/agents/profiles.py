"""Agent CLI profiles: how each CLI is called headless, what it may see, how it is read.

A profile turns checked options (:mod:`celeryapp.core.agent_options`) into an
argv list (never a shell string; the prompt always goes on stdin, never in argv
where ``ps`` shows it), names the worker's environment variables the CLI may see
and the ones the worker sets for it (its own retry bound), and reads the finished
process into the outcome fields of :mod:`.outcome`, raising a classified error
when the run failed. Pure Python; the Celery task and the tests share it.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from celeryapp.core.agent_options import PROFILE_NAMES, check_profile

from . import claude, codex, gemini
from .events import MAX_STDOUT_BYTES, Output
from .outcome import Outcome


@dataclass(frozen=True)
class Profile:
    name: str
    argv: Callable[..., list[str]]          # (executable, options, session_id, workdir)
    env: tuple[str, ...]                     # patterns of the worker's variables it sees
    env_fixed: Callable[[Any], dict[str, str]]  # set by the worker, from its caps
    parse: Callable[[Outcome], dict]         # the result, or a classified error
    partial: Callable[[Outcome], dict]       # the details of a run cut short
    reader: Callable[[], Any] | None = None  # stdout as events; None: one answer
    hidden: tuple[str, ...] = ()             # variables never passed, even if matched
    # the CLI finds a session by the directory it ran in (claude): a kept session gets
    # a directory of its own, named by an id the worker chooses (--session-id)
    sessions_by_workdir: bool = False

    @property
    def setting(self) -> str:
        return f"{self.name}_bin"

    @property
    def env_var(self) -> str:
        return f"TURBO_{self.name.upper()}_BIN"

    def stdout_reader(self) -> Any:
        return self.reader() if self.reader is not None else Output(keep_tail=False,
                                                                    limit=MAX_STDOUT_BYTES)

    def session(self, options: Mapping[str, Any]) -> str | None:
        """The id whose directory a kept (or resumed) session lives in, else None."""
        if not self.sessions_by_workdir:
            return None  # (codex finds a session by its id, from any directory)
        if options.get("resume"):
            return options["resume"]
        if options.get("keep_session"):
            return str(uuid.uuid4())
        return None


PROFILES: dict[str, Profile] = {
    "claude": Profile(name="claude", argv=claude.argv, env=claude.ENV,
                      env_fixed=claude.env_fixed, parse=claude.parse, partial=claude.partial,
                      reader=claude.reader, hidden=claude.HIDDEN,
                      sessions_by_workdir=True),
    "codex": Profile(name="codex", argv=codex.argv, env=codex.ENV, env_fixed=codex.env_fixed,
                     parse=codex.parse, partial=codex.partial, reader=codex.reader),
    "gemini": Profile(name="gemini", argv=gemini.argv, env=gemini.ENV,
                      env_fixed=gemini.env_fixed, parse=gemini.parse, partial=gemini.partial),
}
assert tuple(PROFILES) == PROFILE_NAMES


def get_profile(name: Any) -> Profile:
    return PROFILES[check_profile(name)]
