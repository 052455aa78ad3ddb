"""The real agent CLIs at pinned versions, for tests that run them against local stand-ins.

    from support.agent_clis import cli_path, cli_or_skip_reason, claude_env
    claude = cli_path("claude")          # path of the executable, or CLIUnavailable(reason)
    path, reason = cli_or_skip_reason("claude")   # (None, "npm not found on PATH") instead
    env = claude_env(api.url, home)      # run the real claude against the Messages API stand-in

Each CLI is installed once per machine with ``npm install --no-audit --no-fund --prefix DIR
pkg@version`` into ``${XDG_CACHE_HOME:-~/.cache}/agent-turbo/agent-clis/<name>-<version>/``
under a file lock (several pytest processes may ask at once), and checked with
``--version``. ``AGENT_TURBO_CLI_CACHE`` moves that directory; ``AGENT_TURBO_<NAME>_BIN``
(e.g. ``AGENT_TURBO_CLAUDE_BIN``) names an executable to use instead, unchecked.

Pre-install for ``make``::

    PYTHONPATH=tests python -m support.agent_clis install [claude codex gemini]
    python -m tests.support.agent_clis install          # the same, from the repo root
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

# name -> (npm package, pinned version, executable name in node_modules/.bin)
PINS: dict[str, tuple[str, str, str]] = {
    "claude": ("@anthropic-ai/claude-code", "2.1.197", "claude"),
    "codex": ("@openai/codex", "0.171.0", "codex"),
    "gemini": ("@google/gemini-cli", "0.61.0", "gemini"),
}
INSTALL_TIMEOUT_S = 600


class CLIUnavailable(RuntimeError):
    """The CLI cannot be found or installed; ``str()`` is the reason, fit for pytest.skip."""


def cache_root() -> Path:
    override = os.environ.get("AGENT_TURBO_CLI_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "agent-turbo" / "agent-clis"


def install_dir(name: str) -> Path:
    package, version, _ = _pin(name)
    return cache_root() / f"{name}-{version}"


def _pin(name: str) -> tuple[str, str, str]:
    try:
        return PINS[name]
    except KeyError:
        raise CLIUnavailable(f"unknown agent CLI {name!r}; known: {', '.join(PINS)}") from None


def _candidates(name: str, directory: Path) -> list[Path]:
    package, _, binary = _pin(name)
    found = [directory / "node_modules" / ".bin" / binary]
    if name == "claude":
        # The wrapper's bin/claude.exe is replaced by the native binary in postinstall;
        # where install scripts did not run, the platform package holds the same binary.
        found += sorted((directory / "node_modules" / "@anthropic-ai").glob(
            "claude-code-linux-*/claude"))
    return found


def _version_ok(name: str, executable: Path) -> str | None:
    """None when ``executable --version`` prints the pinned version, else why not."""
    _, version, _ = _pin(name)
    try:
        run = subprocess.run([str(executable), "--version"], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, DISABLE_AUTOUPDATER="1", NO_COLOR="1"))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{executable} --version failed: {exc}"
    if version not in run.stdout:
        tail = (run.stdout + run.stderr).strip()[-500:]
        return f"{executable} --version exit {run.returncode}, not {version}: {tail}"
    return None


def _usable(name: str, directory: Path) -> tuple[Path | None, str | None]:
    problem = None
    for candidate in _candidates(name, directory):
        if candidate.exists() and os.access(candidate, os.X_OK):
            problem = _version_ok(name, candidate)
            if problem is None:
                return candidate, None
    return None, problem


def cli_path(name: str, install: bool = True) -> Path:
    """The pinned CLI's executable, installed on first use; CLIUnavailable says why not."""
    package, version, _ = _pin(name)
    override = os.environ.get(f"AGENT_TURBO_{name.upper()}_BIN")
    if override:
        if not os.access(override, os.X_OK):
            raise CLIUnavailable(f"AGENT_TURBO_{name.upper()}_BIN={override} is not executable")
        return Path(override)
    directory = install_dir(name)
    found, _ = _usable(name, directory)
    if found:
        return found
    if not install:
        raise CLIUnavailable(f"{package}@{version} is not installed in {directory}")
    if not shutil.which("node"):
        raise CLIUnavailable("node not found on PATH (the agent CLIs need Node.js >= 18)")
    npm = shutil.which("npm")
    if not npm:
        raise CLIUnavailable("npm not found on PATH (needed to install "
                             f"{package}@{version})")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be installing it right now
        found, _ = _usable(name, directory)
        if found:
            return found
        directory.mkdir(parents=True, exist_ok=True)
        command = [npm, "install", "--no-audit", "--no-fund", "--no-save",
                   "--loglevel=error", "--prefix", str(directory), f"{package}@{version}"]
        try:
            run = subprocess.run(command, capture_output=True, text=True,
                                 timeout=INSTALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise CLIUnavailable(f"npm install {package}@{version} took more than "
                                 f"{INSTALL_TIMEOUT_S} s") from None
        if run.returncode != 0:
            tail = run.stderr.strip()[-800:] or run.stdout.strip()[-800:]
            raise CLIUnavailable(f"npm install {package}@{version} failed "
                                 f"(exit {run.returncode}): {tail}")
        found, problem = _usable(name, directory)
        if found:
            return found
        raise CLIUnavailable(problem or f"npm installed {package}@{version} into {directory} "
                             f"but no executable was found in node_modules/.bin")


def cli_or_skip_reason(name: str, install: bool = True) -> tuple[Path | None, str | None]:
    """(path, None) or (None, reason): for ``pytest.skip(reason)``."""
    try:
        return cli_path(name, install=install), None
    except CLIUnavailable as exc:
        return None, str(exc)


# What keeps the real claude offline, quiet and deterministic against the stand-in.
# Checked with 2.1.197: with these it sends `HEAD /` and `POST /v1/messages?beta=true`
# to ANTHROPIC_BASE_URL and nothing else.
CLAUDE_QUIET_ENV = {
    "ANTHROPIC_API_KEY": "dummy",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_BUG_COMMAND": "1",
    "DISABLE_NON_ESSENTIAL_MODEL_CALLS": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_FEEDBACK_SURVEY": "1",
    "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
    "NO_COLOR": "1",
}
# Passed through from the caller's environment when set (nothing else is).
CLAUDE_PASS_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM")


def claude_env(api_url: str, home: str | os.PathLike, *, max_retries: int | None = 1,
               **extra: str) -> dict[str, str]:
    """A complete environment (not an overlay) for the real claude against ``api_url``:
    the stand-in's URL, a dummy key, a throwaway HOME, every non-essential request off,
    no proxy for 127.0.0.1, and ``CLAUDE_CODE_MAX_RETRIES`` (None leaves claude's default)."""
    env = {name: os.environ[name] for name in CLAUDE_PASS_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(CLAUDE_QUIET_ENV)
    env.update(ANTHROPIC_BASE_URL=api_url, HOME=str(home), NO_PROXY="127.0.0.1,localhost",
               no_proxy="127.0.0.1,localhost")
    if max_retries is not None:
        env["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    env.update(extra)
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("install", "path"):
        print("usage: python -m support.agent_clis install|path [NAME ...]", file=sys.stderr)
        return 2
    names = argv[1:] or list(PINS)
    failed = 0
    for name in names:
        package, version, _ = _pin(name)
        try:
            path = cli_path(name, install=argv[0] == "install")
        except CLIUnavailable as exc:
            failed += 1
            print(f"agent-clis: {name} ({package}@{version}) unavailable: {exc}", file=sys.stderr)
            continue
        print(f"agent-clis: {name} {version}: {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
