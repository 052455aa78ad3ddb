"""Flower for Agent Turbo: login required, persistent state, redacted task texts.

Two ways to start it, one configuration (``celeryapp/monitoring/flowerconfig.py``)::

    python -m celeryapp.monitoring.flower [flower options]   # checks the environment, then runs
                                                  # celery -A celeryapp flower --conf=<that file>
    celery -A celeryapp flower [flower options]   # the app points Flower at the same file
                                                  # (FLOWER_CONF, see use_project_config)

How Flower reads configuration (flower/command.py, 2.x): ``FLOWER_*`` variables
first, then the ``--conf`` file (default ``flowerconfig.py`` in the working
directory; ``FLOWER_CONF`` names another), which is Python that tornado executes
and whose top-level names set options, then the command line again. The file
here sets options from the ``TURBO_FLOWER_*`` settings and leaves alone any
option given as a ``FLOWER_*`` variable, so: command line > ``FLOWER_*`` >
``TURBO_FLOWER_*``.

Login: ``TURBO_FLOWER_USER`` + ``TURBO_FLOWER_PASSWORD`` (or Flower's own
``FLOWER_BASIC_AUTH=user:password`` / ``FLOWER_AUTH`` OAuth) is required; without
it Flower refuses to start (exit code 2) unless ``TURBO_FLOWER_DEV=1`` and the
address is a loopback one. The password travels in the environment only: the
launcher refuses ``--basic-auth`` on its command line (``/proc/*/cmdline`` is
world-readable). ``/metrics`` and ``/healthcheck`` stay open (Flower serves them
without login), the pages and the API need the login.
"""
from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from celeryapp.config import Settings
from celeryapp.core.processes import term_leader_then_kill_group
from celeryapp.core.redaction import format_flower_task
from celeryapp.core.urls import is_redis

CONFIG_FILE = Path(__file__).resolve().with_name("flowerconfig.py")
EXIT_CONFIG = 2
PROG = "agent-turbo flower"

REFUSAL = (
    "Flower needs a login: set TURBO_FLOWER_USER and TURBO_FLOWER_PASSWORD (or Flower's "
    "FLOWER_BASIC_AUTH=user:password) in the environment. For a local run without login "
    "set TURBO_FLOWER_DEV=1 (loopback address only).")


class FlowerConfigError(Exception):
    """The environment does not let Flower start safely; the message says what to set."""


def _loopback(address: str) -> bool:
    if address in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _cli_value(argv: list[str], name: str) -> str | None:
    """``--name=value`` / ``--name value`` (also with - for _) from Flower's argv, last wins."""
    names = {f"--{name}", f"--{name.replace('_', '-')}"}
    found = None
    for i, arg in enumerate(argv):
        key, eq, value = arg.partition("=")
        if key in names:
            found = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
    return found


def default_db_path(settings) -> Path:
    return settings.flower_db or Path(settings.results_dir).parent / "flower" / "flower.db"


def flower_options(current=None, argv: list[str] | None = None) -> dict:
    """Flower option values from the settings; raises FlowerConfigError when unsafe.

    ``current`` is tornado's option object while Flower loads the config file
    (it holds what ``FLOWER_*`` variables and the command line set already);
    ``argv`` is the launcher's command line (for the same check before Flower runs).
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        raise FlowerConfigError(f"invalid settings: {exc}") from None
    env = os.environ
    argv = argv or []
    opts: dict = {}

    user, password = settings.flower_user, settings.flower_password
    if bool(user) != bool(password):
        raise FlowerConfigError(
            "set both TURBO_FLOWER_USER and TURBO_FLOWER_PASSWORD (one of them is empty)")
    if user and ":" in user:
        raise FlowerConfigError("TURBO_FLOWER_USER must not contain ':'")
    if user and not env.get("FLOWER_BASIC_AUTH"):
        opts["basic_auth"] = [f"{user}:{password}"]

    has_login = bool(opts.get("basic_auth") or env.get("FLOWER_BASIC_AUTH")
                     or env.get("FLOWER_AUTH") or _cli_value(argv, "auth"))
    if current is not None:
        has_login = has_login or bool(current.basic_auth or current.auth)

    if "FLOWER_ADDRESS" not in env:
        opts["address"] = settings.flower_address
    address = (_cli_value(argv, "address") or (current.address if current is not None else "")
               or env.get("FLOWER_ADDRESS") or settings.flower_address)
    unix_socket = env.get("FLOWER_UNIX_SOCKET") or _cli_value(argv, "unix_socket") or (
        current.unix_socket if current is not None else "")
    if not has_login:
        if not settings.flower_dev:
            raise FlowerConfigError(REFUSAL)
        if not unix_socket and not _loopback(address):
            raise FlowerConfigError(
                f"TURBO_FLOWER_DEV=1 runs Flower without login: only on a loopback address, "
                f"not {address or 'every interface'!r}; set a login to listen there")
        print(f"{PROG}: WARNING: no login (TURBO_FLOWER_DEV=1), listening on {address}",
              file=sys.stderr)

    if "FLOWER_PORT" not in env:
        opts["port"] = settings.flower_port
    if "FLOWER_PERSISTENT" not in env:
        opts["persistent"] = settings.flower_persistent
    if "FLOWER_DB" not in env:
        db = default_db_path(settings)
        opts["db"] = str(db)
    if "FLOWER_STATE_SAVE_INTERVAL" not in env:
        opts["state_save_interval"] = settings.flower_state_save_interval
    if "FLOWER_MAX_TASKS" not in env:
        opts["max_tasks"] = settings.flower_max_tasks
    opts["format_task"] = format_flower_task

    db = Path(opts.get("db") or env.get("FLOWER_DB") or "flower")
    if opts.get("persistent", True) and db.parent != Path("."):
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # it holds task texts
    return opts


def apply_config(namespace: dict) -> None:
    """Called by flowerconfig.py inside Flower: set the options or exit with code 2."""
    try:
        from tornado.options import options as current
    except ImportError:  # pragma: no cover - Flower always has tornado
        current = None
    try:
        namespace.update(flower_options(current))
    except FlowerConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _invoked_command() -> str | None:
    """The celery sub-command being run (click's context while the CLI loads the app)."""
    try:
        import click
    except ImportError:  # pragma: no cover
        return None
    ctx = click.get_current_context(silent=True)
    while ctx is not None:
        if ctx.invoked_subcommand:
            return ctx.invoked_subcommand
        ctx = ctx.parent
    return None


def use_project_config(app=None) -> None:
    """Make ``celery -A celeryapp flower`` load celeryapp/monitoring/flowerconfig.py.

    Called when the app is built. In a Flower process: its Redis connections are
    named :func:`client_name` (so :meth:`FlowerProcess.wait_ready` can tell when
    its event receiver listens), and with neither ``--conf`` nor ``FLOWER_CONF``,
    ``FLOWER_CONF`` is set to the project file: Flower reads that variable after
    loading the app and before its own config file, so the login check and the
    settings apply to the plain command too. Anywhere else: nothing.
    """
    if _invoked_command() != "flower":
        return
    if app is not None and is_redis(app.conf.broker_url):
        options = dict(app.conf.broker_transport_options or {})
        options.setdefault("client_name", client_name(os.getpid()))
        app.conf.broker_transport_options = options
    if os.environ.get("FLOWER_CONF"):
        return
    if any(arg == "--conf" or arg.startswith("--conf=") for arg in sys.argv[1:]):
        return
    os.environ["FLOWER_CONF"] = str(CONFIG_FILE)


def client_name(pid: int) -> str:
    """The name a Flower process gives its Redis connections (``CLIENT LIST``)."""
    return f"turbo-flower-{pid}"


def events_subscribed(pid: int) -> bool:
    """Whether Flower ``pid`` has subscribed to the event channels on the broker.

    True as well where that cannot be told (not Redis, or CLIENT LIST refused).
    """
    from redis.exceptions import ResponseError

    from celeryapp import app

    if not is_redis(app.conf.broker_url):
        return True
    try:
        with app.connection_for_read() as connection:
            with connection.default_channel.conn_or_acquire() as client:
                clients = client.client_list()
    except ResponseError:  # e.g. an ACL user without CLIENT
        return True
    return any(c.get("name") == client_name(pid)
               and (int(c.get("psub", 0)) > 0 or int(c.get("sub", 0)) > 0) for c in clients)


def command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "celeryapp", "flower",
            f"--conf={CONFIG_FILE}", *argv]


def check_argv(argv: list[str]) -> None:
    for arg in argv:
        key = arg.partition("=")[0]
        if key in ("--basic_auth", "--basic-auth", "--oauth2_secret", "--oauth2-secret",
                   "--cookie_secret", "--cookie-secret"):
            raise FlowerConfigError(
                f"{key} on the command line is readable by every user of this host "
                f"(/proc/*/cmdline): set TURBO_FLOWER_USER and TURBO_FLOWER_PASSWORD "
                f"(or FLOWER_BASIC_AUTH / FLOWER_OAUTH2_SECRET) in the environment")
        if key == "--conf":
            raise FlowerConfigError(
                "--conf: this launcher always uses celeryapp/monitoring/flowerconfig.py; run "
                "`celery -A celeryapp flower --conf=...` to use another file")


def main(argv: list[str] | None = None) -> int:
    """``python -m celeryapp.monitoring.flower``: check the environment, then exec Flower."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_argv(argv)
        flower_options(argv=argv)
    except FlowerConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    cmd = command(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)  # the environment (and so the password) is inherited
    return 0  # pragma: no cover


# --- a Flower process for the demo and the tests -------------------------------------
@dataclass
class FlowerProcess:
    """Flower started through the launcher; the login goes through the environment."""

    port: int
    user: str | None = None
    password: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    logfile: Path | None = None
    extra_args: tuple[str, ...] = ()
    launcher: bool = True  # False: plain `celery -A celeryapp flower` (same config file)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """Ours plus ``env``; inherited FLOWER_* / TURBO_FLOWER_* variables are dropped."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("FLOWER_", "TURBO_FLOWER_"))}
        env.update(self.env)
        env["TURBO_FLOWER_PORT"] = str(self.port)
        if self.user is not None:
            env.update(TURBO_FLOWER_USER=self.user, TURBO_FLOWER_PASSWORD=self.password or "")
        return env

    def command(self) -> list[str]:
        if self.launcher:
            return [sys.executable, "-m", "celeryapp.monitoring.flower", *self.extra_args]
        return [sys.executable, "-m", "celery", "-A", "celeryapp", "flower", *self.extra_args]

    def start(self, timeout: float = 60.0) -> FlowerProcess:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> FlowerProcess:
        """Start it without waiting (``wait_ready`` later): other work can go on meanwhile."""
        out = open(self.logfile, "ab") if self.logfile else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            if self.logfile:
                out.close()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready when /healthcheck (never behind the login) answers and the event
        receiver listens: Flower answers HTTP before that, and events sent in between
        would never reach it."""
        deadline = time.monotonic() + timeout
        self._wait_healthy(deadline, timeout)
        while not events_subscribed(self.process.pid):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise TimeoutError(f"Flower did not listen for events in {timeout:.0f}s: "
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def _wait_healthy(self, deadline: float, timeout: float) -> None:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Flower exited with {self.process.returncode}: "
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthcheck", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"Flower did not answer on {self.url} in {timeout:.0f}s: "
                           f"{self.log_tail()}")

    def auth_header(self) -> dict[str, str]:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def get(self, path: str, auth: bool = True, timeout: float = 10.0) -> tuple[int, bytes]:
        """(status, body) of a GET; HTTP errors are returned, not raised."""
        headers = self.auth_header() if auth and self.user else {}
        request = urllib.request.Request(f"{self.url}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def log_tail(self, size: int = 3000) -> str:
        if self.logfile and self.logfile.exists():
            return self.logfile.read_text(errors="replace")[-size:]
        return ""

    def stop(self, timeout: float = 15.0) -> None:
        """TERM (Flower saves its state on a clean stop), then KILL the group."""
        term_leader_then_kill_group(self.process, timeout)


if __name__ == "__main__":
    sys.exit(main())
