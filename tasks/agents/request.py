"""One agent run's request, checked on the worker; no Celery here.

The submit side (``delay()``, ``turbo submit``) checks a request's shape before it
travels; a message can also come from a client that checks nothing (``send_task``,
another language), so the worker checks every one again, once: here, with the prompt
size limit and this worker's caps, before the task takes a slot. The runner
(:func:`.runner.run`) takes only an :class:`AgentRequest`, so nothing reaches a CLI
unchecked and nothing is checked twice.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celeryapp.core.agent_options import check_request

from ..errors import InvalidRequest
from .profiles import Profile, get_profile
from .sandbox import Caps


@dataclass(frozen=True)
class AgentRequest:
    """What the runner runs: a profile, a prompt, the given options (checked), the
    caller's ``cwd`` (None: a scratch directory) and the caps they were checked against
    (they also shape the run: room, environment, kill grace). Made by :meth:`checked`."""
    profile: Profile
    prompt: str
    options: Mapping[str, Any]
    cwd: str | None
    caps: Caps

    @classmethod
    def checked(cls, profile: Any, prompt: Any, options: Mapping[str, Any], *, caps: Caps,
                cwd: Any = None, prompt_limit: int | None) -> AgentRequest:
        """The request, or InvalidRequest naming what is wrong: the prompt (within
        ``prompt_limit`` bytes, TURBO_AGENT_MAX_PROMPT_BYTES; None: no limit), the
        profile and its options (:mod:`celeryapp.core.agent_options`), then what this
        worker's operator allows (``caps``: modes, tools, ``cwd`` roots)."""
        options = check_request(prompt, profile, options, prompt_limit)
        if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
            raise InvalidRequest(f"cwd must be an absolute path, got {cwd!r}")
        cwd = None if cwd is None else os.fspath(cwd)
        caps.check(options, cwd)
        return cls(get_profile(profile), prompt, options, cwd, caps)
