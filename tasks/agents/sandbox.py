"""Each agent run in its own room: a scratch directory, an allowlisted environment,
and the operator's caps on what callers may ask for. No Celery here.

An agent CLI runs commands its prompt chose. So by default it runs in a fresh
directory of its own (not the worker's checkout), sees only the environment it
needs (not ``DATABRICKS_TOKEN`` or cloud keys), and may be given only the
permission modes, tools and directories the worker's operator allowed
(``TURBO_AGENT_PERMISSION_MODES``, ``TURBO_AGENT_ALLOWED_TOOLS``,
``TURBO_AGENT_CWD_ROOTS``); a request beyond them fails at once with
:class:`InvalidRequest` naming the setting.
"""
from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest

# What every CLI needs to start, find its config and reach its API through a proxy.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "TMPDIR",
            "LANG", "LANGUAGE", "LC_*", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME",
            "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
            "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy", "SSL_CERT_FILE",
            "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "NODE_USE_ENV_PROXY")
SESSIONS_DIR = "sessions"


def split_list(text: str | Iterable[str] | None) -> tuple[str, ...]:
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else text
    return tuple(item.strip() for item in items if item and item.strip())


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Caps:
    """The worker operator's limits on agent requests, and where runs live."""
    scratch_dir: Path
    permission_modes: tuple[str, ...] = ()
    allowed_tools: tuple[str, ...] = ("*",)
    cwd_roots: tuple[str, ...] = ()
    env_pass: tuple[str, ...] = ()
    cli_max_retries: int = 1
    kill_grace: float = 5.0

    @classmethod
    def from_settings(cls, settings: Any, kill_grace: float = 5.0) -> Caps:
        return cls(scratch_dir=Path(settings.agent_scratch_dir),
                   permission_modes=split_list(settings.agent_permission_modes),
                   allowed_tools=split_list(settings.agent_allowed_tools),
                   cwd_roots=split_list(settings.agent_cwd_roots),
                   env_pass=split_list(settings.agent_env_pass),
                   cli_max_retries=settings.agent_cli_max_retries,
                   kill_grace=kill_grace)

    def check(self, options: Mapping[str, Any], cwd: str | None) -> None:
        """Refuse what this worker's operator did not allow (InvalidRequest)."""
        mode = options.get("permission_mode")
        if mode is not None and mode not in self.permission_modes:
            allowed = ", ".join(self.permission_modes) or "none"
            raise InvalidRequest(f"permission mode {mode!r} is not allowed on this worker "
                                 f"(TURBO_AGENT_PERMISSION_MODES: {allowed})")
        for tool in options.get("allowed_tools") or ():
            if not _matches(tool, self.allowed_tools):
                allowed = ", ".join(self.allowed_tools) or "none"
                raise InvalidRequest(f"tool {tool!r} is not allowed on this worker "
                                     f"(TURBO_AGENT_ALLOWED_TOOLS: {allowed})")
        if cwd is not None:
            self.check_cwd(cwd)

    def check_cwd(self, cwd: str) -> str:
        if not os.path.isabs(cwd):
            raise InvalidRequest(f"cwd must be an absolute path, got {cwd!r}")
        real = os.path.realpath(cwd)
        for root in self.cwd_roots:
            root_real = os.path.realpath(root)
            if os.path.commonpath([real, root_real]) == root_real:
                break
        else:
            roots = ", ".join(self.cwd_roots) or "none: runs get a scratch directory"
            raise InvalidRequest(f"cwd {cwd!r} is outside the directories this worker lets "
                                 f"agents work in (TURBO_AGENT_CWD_ROOTS: {roots})")
        if not os.path.isdir(real):
            raise InvalidRequest(f"cwd {cwd!r} is not a directory on this worker")
        return cwd

    def env(self, profile_patterns: Iterable[str], fixed: Mapping[str, str],
            base: Mapping[str, str] | None = None,
            hidden: Iterable[str] = ()) -> dict[str, str]:
        """The CLI's environment: the allowlisted part of the worker's, then ``fixed``.
        Turbo's own settings (the broker URL and its password) never pass."""
        base = os.environ if base is None else base
        patterns = (*BASE_ENV, *profile_patterns, *self.env_pass)
        hidden = set(hidden)
        env = {key: value for key, value in base.items()
               if not key.startswith("TURBO_") and key not in hidden
               and _matches(key, patterns)}
        env.update(fixed)
        return env

    def session_dir(self, profile: str, session_id: str) -> Path:
        return self.scratch_dir / SESSIONS_DIR / profile / session_id


class Room:
    """The run's directories: ``path``, where the CLI works - the caller's ``cwd``, a
    kept session's directory or a fresh scratch directory - and, for a directory of
    the worker's own, ``tmp``, the run's TMPDIR (the CLIs write error reports there
    that quote the prompt: gemini's ``gemini-client-error-*.json``), a sibling of
    ``path`` removed with it on exit unless ``keep``."""

    WORK, TMP = "work", "tmp"

    def __init__(self, caps: Caps, *, cwd: str | None = None, keep: bool = False,
                 session: tuple[str, str] | None = None, resume: bool = False):
        self.caps, self.keep = caps, keep
        self.owned = cwd is None
        self.path: Path | None = Path(cwd) if cwd is not None else None
        self.tmp: Path | None = None
        self._base: Path | None = None
        self._session, self._resume = session, resume

    def __enter__(self) -> Room:
        if self.path is not None:
            return self
        if self._session is not None:  # a kept session: its own directory, kept
            self.keep = True
            base = self.caps.session_dir(*self._session)
            if self._resume and not base.is_dir():
                profile, session_id = self._session
                raise InvalidRequest(
                    f"{profile} session {session_id} is not kept on this worker; a session "
                    f"is resumed on the host that ran it with keep_session=true "
                    f"(its details name the host: pass host=...)")
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            self.caps.scratch_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            base = Path(tempfile.mkdtemp(prefix="run-", dir=self.caps.scratch_dir))
        self._base, self.path, self.tmp = base, base / self.WORK, base / self.TMP
        self.path.mkdir(exist_ok=True, mode=0o700)
        self.tmp.mkdir(exist_ok=True, mode=0o700)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.owned and not self.keep and self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)

    @property
    def kept(self) -> str | None:
        """The working directory's path when it outlives the run (for the caller)."""
        return str(self.path) if self.path is not None and (self.keep or not self.owned) \
            else None
