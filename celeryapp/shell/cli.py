"""``turbo``: submit and follow SQL queries, agent runs and workflows from a shell.

Every call blocks the person or coding agent that makes it, so the common
commands (``submit query|agent``, ``status``, ``result``, ``ls``) import only
the standard library: they write Celery messages and read results with the raw
Redis client in :mod:`celeryapp.shell.resp`. ``cancel`` (Celery's revoke
broadcast) and ``submit flow`` (the workflow validator) import more, on demand.

Exit codes: 0 ok, 1 the task failed / was cancelled / is not finished / not
found, 2 usage error or bad input, 3 Redis unreachable or refused the credentials.
"""
from __future__ import annotations

import os
import sys
import time

from .. import constants as C
from . import resp
from .messages import task_message

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REDIS = 0, 1, 2, 3
META_KEY = "celery-task-meta-{id}"
READY = ("SUCCESS", "FAILURE", "REVOKED")
FLOW_DONE = ("succeeded", "failed", "cancelled")
FLOW_START_TASK = "turbo.flow.start"
UNKNOWN = "PENDING (unknown or not started)"


class UsageError(Exception):
    """Bad arguments or input: exit 2."""


class Failed(Exception):
    """The task failed, was cancelled, is not finished or not found: exit 1."""


# --- settings from the environment (the same TURBO_* names as celeryapp.config) ---

def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _env_number(name: str, default: float) -> float:
    value = _env(name)
    if value is None:
        return float(default)
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {value!r}") from None


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    text = value.strip().lower()
    if text in ("1", "true", "t", "yes", "y", "on"):
        return True
    if text in ("0", "false", "f", "no", "n", "off"):
        return False
    raise UsageError(f"{name} must be true or false, got {value!r}")


def sent_event() -> bool:
    """Whether to emit Flower's task-sent event, as Celery does (TURBO_SEND_SENT_EVENT)."""
    return _env_bool("TURBO_SEND_SENT_EVENT", False)


def _connect(url: str, variable: str) -> resp.Redis:
    tls = {}
    if url.startswith("rediss:"):
        tls = {"tls_ca": _env("TURBO_REDIS_TLS_CA"), "tls_cert": _env("TURBO_REDIS_TLS_CERT"),
               "tls_key": _env("TURBO_REDIS_TLS_KEY")}
    try:
        return resp.connect(url, password=_env("TURBO_REDIS_PASSWORD"), **tls)
    except resp.RedisConfigError as exc:
        raise resp.RedisConfigError(f"{variable}: {exc}") from None


def broker() -> resp.Redis:
    return _connect(_env("TURBO_BROKER_URL", C.DEFAULT_BROKER_URL), "TURBO_BROKER_URL")


def backend() -> resp.Redis:
    """The result backend (TURBO_RESULT_BACKEND, default the broker URL)."""
    if _env("TURBO_RESULT_BACKEND"):
        return _connect(_env("TURBO_RESULT_BACKEND"), "TURBO_RESULT_BACKEND")
    return broker()


def result_expires() -> int:
    return int(_env_number("TURBO_RESULT_EXPIRES", C.DEFAULT_RESULT_EXPIRES))


# --- submit ----------------------------------------------------------------------------

def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"expected a number, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


def checked_timeout(timeout, kind: str) -> tuple[float, float]:
    """(soft, hard) Celery limits for a ``kind`` task, as TurboTask.apply_async computes."""
    default_name, max_name = f"TURBO_{kind.upper()}_TIMEOUT", f"TURBO_{kind.upper()}_MAX_TIMEOUT"
    default = getattr(C, f"DEFAULT_{kind.upper()}_TIMEOUT")
    longest = _env_number(max_name, getattr(C, f"DEFAULT_{kind.upper()}_MAX_TIMEOUT"))
    if timeout is None:
        timeout = _env_number(default_name, default)
    elif timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    elif timeout > longest:
        raise UsageError(f"--timeout {timeout:g}s exceeds the maximum of {longest:g}s "
                         f"for a {kind} ({max_name})")
    return C.time_limits(float(timeout), _env_number("TURBO_TIME_LIMIT_GRACE",
                                                     C.DEFAULT_TIME_LIMIT_GRACE))


def _priority(text: str | None) -> int:
    default = _env("TURBO_DEFAULT_PRIORITY", C.DEFAULT_PRIORITY)
    try:
        if text is not None and text.isdigit():
            return C.priority_value(int(text))
        return C.priority_value(text, default)
    except (ValueError, KeyError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None


def _read_text(value: str, what: str) -> str:
    if value == "-":
        value = sys.stdin.read()
    if not value.strip():
        raise UsageError(f"the {what} is empty")
    return value


def publish(name: str, args: list, kwargs: dict, *, queue: str, priority: int,
            limits: tuple[float, float] | None, recent: str = "task") -> str:
    soft, hard = limits if limits else (None, None)
    message = task_message(name, args, kwargs, queue=queue, priority=priority,
                           time_limit=hard, soft_time_limit=soft)
    b, r = broker(), backend()
    resp.run_batches([(b, message.commands(b.db, sent_event=sent_event())),
                      (r, remember(f"{recent}:{message.id}"))])
    return message.id


def remember(member: str, when: float | None = None) -> list[tuple]:
    """Commands that add ``member`` to the recent list and keep it bounded."""
    now = time.time()
    return [("ZADD", C.RECENT_KEY, repr(float(when or now)), member),
            ("ZREMRANGEBYRANK", C.RECENT_KEY, 0, -(C.RECENT_KEEP + 1)),
            ("ZREMRANGEBYSCORE", C.RECENT_KEY, "-inf", repr(now - result_expires()))]


def cmd_submit_query(a) -> int:
    sql = _read_text(a.sql, "SQL")
    kwargs: dict = {}
    if a.params is not None:
        import json

        try:
            params = json.loads(a.params)
        except ValueError as exc:
            raise UsageError(f"--params is not valid JSON ({exc}): {a.params!r}") from None
        if not isinstance(params, (list, dict)):
            raise UsageError(f"--params must be a JSON list or object, got {a.params!r}")
        kwargs["params"] = params
    if a.engine:
        kwargs["engine"] = a.engine
    if a.timeout is not None:
        kwargs["timeout"] = a.timeout
    if a.retries is not None:
        kwargs["retries"] = _non_negative(a.retries, "--retries")
    if a.max_inline_rows is not None:
        kwargs["max_inline_rows"] = _non_negative(a.max_inline_rows, "--max-inline-rows")
    limits = checked_timeout(a.timeout, "query")
    task_id = publish(C.QUERY_TASK, [sql], kwargs, queue=a.queue or C.QUERY_QUEUE,
                      priority=_priority(a.priority), limits=limits)
    print(task_id)
    return EXIT_OK


def cmd_submit_agent(a) -> int:
    prompt = _read_text(a.prompt, "prompt")
    kwargs: dict = {}
    if a.profile:
        kwargs["profile"] = a.profile
    if a.cwd:
        kwargs["cwd"] = os.path.abspath(a.cwd)
    if a.model:
        kwargs["model"] = a.model
    if a.max_turns is not None:
        if a.max_turns <= 0:
            raise UsageError(f"--max-turns must be at least 1, got {a.max_turns}")
        kwargs["max_turns"] = a.max_turns
    if a.allowed_tools is not None:
        tools = [tool.strip() for tool in a.allowed_tools.split(",") if tool.strip()]
        if not tools:
            raise UsageError("--allowed-tools is empty; give a comma-separated list")
        kwargs["allowed_tools"] = tools
    if a.permission_mode:
        kwargs["permission_mode"] = a.permission_mode
    if a.append_system_prompt:
        kwargs["append_system_prompt"] = a.append_system_prompt
    if a.timeout is not None:
        kwargs["timeout"] = a.timeout
    if a.retries is not None:
        kwargs["retries"] = _non_negative(a.retries, "--retries")
    if a.queue and a.host:
        raise UsageError("give --queue or --host, not both")
    queue = C.host_queue(a.host) if a.host else a.queue or C.AGENT_QUEUE
    limits = checked_timeout(a.timeout, "agent")
    task_id = publish(C.AGENT_TASK, [prompt], kwargs, queue=queue,
                      priority=_priority(a.priority), limits=limits)
    print(task_id)
    return EXIT_OK


def cmd_submit_flow(a) -> int:
    import json

    try:
        from celeryapp.flows import FlowSpecError, prepare
    except ImportError as exc:
        raise Failed(f"workflows are not available in this installation "
                     f"(cannot import celeryapp.flows: {exc})") from None
    spec = a.file
    if spec == "-":
        spec = sys.stdin.read()
        if not spec.strip():
            raise UsageError("the workflow on stdin is empty")
        spec += "\n"  # text, not a path, for celeryapp.flowspec.load
    elif not os.path.isfile(spec):
        raise UsageError(f"workflow file not found: {spec}")
    notify = None
    if a.notify:
        target = "webhook" if a.notify.startswith(("http://", "https://")) else "dir"
        notify = {target: a.notify}
    try:
        flow_id, state = prepare(spec, notify=notify)
    except FlowSpecError as exc:
        raise UsageError(str(exc)) from None
    r = backend()
    commands = [("SET", C.FLOW_KEY.format(id=flow_id), json.dumps(state),
                 "EX", result_expires(), "NX"),
                *remember(f"flow:{flow_id}", state.get("created"))]
    stored = resp.run_batches([(r, commands)])[0][0]
    if stored is None:
        raise Failed(f"workflow {flow_id} exists already")
    message = task_message(FLOW_START_TASK, [flow_id], {}, queue=C.DEFAULT_QUEUE,
                           priority=_priority(None))
    b = broker()
    resp.run_batches([(b, message.commands(b.db, sent_event=sent_event()))])
    print(flow_id)
    return EXIT_OK


def _non_negative(value: int, option: str) -> int:
    if value < 0:
        raise UsageError(f"{option} must be >= 0, got {value}")
    return value


# --- reading state ----------------------------------------------------------------------

class Entry:
    """One task or workflow as stored in the result backend."""

    __slots__ = ("id", "kind", "submitted", "meta", "flow", "started")

    def __init__(self, id: str, kind: str | None = None, submitted: float | None = None):
        self.id, self.kind, self.submitted = id, kind, submitted
        self.meta = self.flow = self.started = None

    @property
    def is_flow(self) -> bool:
        return self.flow is not None or self.kind == "flow"

    @property
    def state(self) -> str:
        if self.flow is not None:
            return str(self.flow.get("state") or "?")
        if self.meta is None:
            return "PENDING"
        return str(self.meta.get("status") or "PENDING")

    @property
    def ready(self) -> bool:
        if self.is_flow:
            return self.flow is not None and self.state in FLOW_DONE
        return self.state in READY

    @property
    def ok(self) -> bool:
        return self.state in ("SUCCESS", "succeeded")

    @property
    def worker(self) -> str | None:
        meta = self.meta or {}
        worker = meta.get("worker")
        if not worker and isinstance(meta.get("result"), dict):
            worker = meta["result"].get("hostname") or meta["result"].get("worker")
        return worker

    @property
    def name(self) -> str:
        if self.is_flow:
            return f"flow:{(self.flow or {}).get('name') or '?'}"
        return (self.meta or {}).get("name") or "-"


def _loads(raw):
    import json

    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return {"status": "?", "result": raw.decode(errors="replace")[:200]}


def fetch(client: resp.Redis, entries: list[Entry]) -> list[Entry]:
    """Fill in the meta (tasks) or state (flows) of ``entries`` in one round trip."""
    commands, slots = [], []
    for entry in entries:
        if entry.kind in (None, "task"):
            commands.append(("GET", META_KEY.format(id=entry.id)))
            slots.append((entry, "meta"))
        if entry.kind in (None, "flow"):
            commands.append(("GET", C.FLOW_KEY.format(id=entry.id)))
            slots.append((entry, "flow"))
    if commands:
        for (entry, field), raw in zip(slots, client.pipeline(commands)):
            setattr(entry, field, _loads(raw))
    return entries


def find_started(entries: list[Entry]) -> None:
    """When running tasks were delivered to their worker (kombu's unacked index).

    With acks late and prefetch 1 the delivery is (nearly) the start, so this
    gives a running time that Celery's result backend does not store.
    """
    import json

    running = {e.id: e for e in entries if e.meta and e.state in ("STARTED", "RETRY")}
    if not running:
        return
    b = broker()
    unacked, index = b.pipeline([("HGETALL", "unacked"),
                                 ("ZRANGE", "unacked_index", 0, -1, "WITHSCORES")])
    scores = dict(zip(index[::2], index[1::2]))
    for tag, raw in zip(unacked[::2], unacked[1::2]):
        if not any(task_id.encode() in raw for task_id in running):
            continue
        try:
            task_id = json.loads(raw)[0]["headers"]["id"]
        except (ValueError, LookupError, TypeError):
            continue
        if task_id in running and tag in scores:
            running[task_id].started = float(scores[tag])


def recent(client: resp.Redis, count: int) -> list[Entry]:
    raw = client.execute("ZREVRANGE", C.RECENT_KEY, 0, max(0, count - 1), "WITHSCORES")
    entries = []
    for member, score in zip(raw[::2], raw[1::2]):
        kind, _, entry_id = member.decode().partition(":")
        entries.append(Entry(entry_id, kind if kind in ("task", "flow") else None, float(score)))
    return entries


# --- formatting --------------------------------------------------------------------------

def seconds(value: float | None, approx: bool = False) -> str:
    if value is None or value < 0:
        return "-"
    mark = "~" if approx else ""
    if value < 10:
        return f"{mark}{value:.2f}s"
    if value < 60:
        return f"{mark}{value:.1f}s"
    if value < 3600:
        return f"{mark}{int(value // 60)}m{int(value % 60):02d}s"
    return f"{mark}{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def epoch(value) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    from datetime import datetime, timezone

    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def runtime(entry: Entry, now: float) -> str:
    if entry.flow is not None:
        start, end = epoch(entry.flow.get("created")), epoch(entry.flow.get("ended"))
        if start is None:
            return "-"
        return seconds((end or now) - start)
    meta = entry.meta or {}
    result = meta.get("result")
    if meta.get("status") == "SUCCESS" and isinstance(result, dict):
        for field in ("elapsed_s", "duration_s"):
            if isinstance(result.get(field), (int, float)):
                return seconds(result[field])
    if entry.started is not None:
        return seconds(now - entry.started)
    done = epoch(meta.get("date_done"))
    if done is not None and entry.submitted is not None:
        return seconds(done - entry.submitted, approx=True)  # includes the queue wait
    return "-"


def error_text(result) -> str:
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = " ".join(str(part) for part in message)
        return f"{result['exc_type']}: {message}" if message not in (None, "") \
            else str(result["exc_type"])
    return "" if result is None else str(result)


def detail(entry: Entry) -> str:
    meta = entry.meta or {}
    result = meta.get("result")
    state = entry.state
    if entry.flow is not None:
        steps = entry.flow.get("steps") or {}
        counts: dict[str, int] = {}
        for step in steps.values():
            counts[step.get("state", "?")] = counts.get(step.get("state", "?"), 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())
    if state in ("FAILURE", "RETRY", "REVOKED"):
        return _short(error_text(result))
    if state == "SUCCESS" and isinstance(result, dict):
        if "row_count" in result:
            text = _rows(result["row_count"])
            return text + (" (spilled to Parquet)" if result.get("parquet_path") else "")
        if "num_turns" in result:
            cost = result.get("cost_usd")
            text = f"{result['num_turns']} turns"
            text += f", ${cost:.4f}" if isinstance(cost, (int, float)) else ""
            return text + (", is_error" if result.get("is_error") else "")
    return ""


def _rows(count) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _short(text: str, size: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= size else text[:size - 1] + "…"


def table(headers: list[str], rows: list[list], out=None) -> None:
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    out.write("\n".join(lines) + "\n")


def state_label(entry: Entry) -> str:
    if not entry.is_flow and entry.meta is None:
        return UNKNOWN
    if entry.is_flow and entry.flow is None:
        return "unknown (expired or never stored)"
    return entry.state


def step_rows(entry: Entry, now: float, limit: int | None = 120) -> list[list]:
    rows = []
    steps = list((entry.flow or {}).get("steps", {}).items())
    for position, (name, step) in enumerate(steps):
        branch = "└" if position == len(steps) - 1 else "├"
        start, end = epoch(step.get("started")), epoch(step.get("ended"))
        run = seconds((end or now) - start) if start is not None else "-"
        note = step.get("error") or _step_summary(step.get("result")) or ""
        if step.get("task_id"):
            note = f"task {step['task_id']}" + (f"; {note}" if note else "")
        attempts = step.get("attempts")
        if attempts and attempts > 1:
            note = f"{attempts} attempts; {note}" if note else f"{attempts} attempts"
        rows.append([f"  {branch} {name}", step.get("kind") or "-", step.get("state") or "?",
                     step.get("worker") or "-", run, "",
                     _short(note, limit) if limit else " ".join(str(note).split())])
    return rows


def _step_summary(result) -> str:
    """A glance at a step's result summary (kept in the workflow state)."""
    if not isinstance(result, dict):
        return ""
    if "row_count" in result:
        text = _rows(result["row_count"])
        return text + (f" in {result['parquet_path']}" if result.get("parquet_path") else "")
    if "result_preview" in result:
        return repr(result["result_preview"])
    if "value" in result:
        import json

        return json.dumps(result["value"])
    return ""


def status_rows(entries: list[Entry], with_steps: bool = True) -> list[list]:
    now = time.time()
    rows = []
    for entry in entries:
        age = seconds(now - entry.submitted) if entry.submitted else "-"
        rows.append([entry.id, entry.name, state_label(entry), entry.worker or "-",
                     runtime(entry, now), age, detail(entry)])
        if with_steps and entry.flow is not None:
            rows.extend(step_rows(entry, now))
    return rows


STATUS_HEADERS = ["ID", "KIND", "STATE", "WORKER", "RUNTIME", "AGE", "DETAIL"]


def cmd_status(a) -> int:
    import json

    r = backend()
    if a.ids:
        entries = fetch(r, [Entry(i) for i in a.ids])
        submitted = _submitted_times(r, entries)
        for entry in entries:
            entry.submitted = submitted.get(entry.id)
    else:
        entries = fetch(r, recent(r, a.n))
    if not entries:
        print("no recent tasks or workflows")
        return EXIT_OK
    find_started(entries)
    if a.json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2))
    else:
        table(STATUS_HEADERS, status_rows(entries))
    if a.ids and not all(_known(e) for e in entries):
        return EXIT_FAILED  # an id nobody has heard of: not found
    return EXIT_OK


def _known(entry: Entry) -> bool:
    return entry.meta is not None or entry.flow is not None or entry.submitted is not None


def _submitted_times(r: resp.Redis, entries: list[Entry]) -> dict[str, float]:
    members = []
    for entry in entries:
        members.append(f"{'flow' if entry.flow is not None else 'task'}:{entry.id}")
    scores = r.pipeline([("ZSCORE", C.RECENT_KEY, m) for m in members])
    return {e.id: float(s) for e, s in zip(entries, scores) if s is not None}


def _entry_json(entry: Entry) -> dict:
    out = {"id": entry.id, "kind": "flow" if entry.is_flow else "task", "name": entry.name,
           "state": entry.state, "submitted": entry.submitted, "worker": entry.worker,
           "started": entry.started}
    if entry.flow is not None:
        out["flow"] = entry.flow
    elif entry.meta is not None:
        out.update(date_done=entry.meta.get("date_done"), queue=entry.meta.get("queue"),
                   retries=entry.meta.get("retries"))
        if entry.state in ("FAILURE", "RETRY", "REVOKED"):
            out["error"] = error_text(entry.meta.get("result"))
    return out


def cmd_ls(a) -> int:
    r = backend()
    entries = fetch(r, recent(r, a.n))
    if not entries:
        print("no recent tasks or workflows")
        return EXIT_OK
    now = time.time()
    table(["ID", "KIND", "STATE", "SUBMITTED", "DETAIL"],
          [[e.id, e.name, state_label(e), seconds(now - e.submitted) + " ago", detail(e)]
           for e in entries])
    return EXIT_OK


# --- result ---------------------------------------------------------------------------

def cmd_result(a) -> int:
    import json

    r = backend()
    entry = fetch(r, [Entry(a.id)])[0]
    if a.wait:  # also when already done: stderr then says how it ended
        entry = wait_for(r, entry, a.timeout)
    if entry.is_flow:
        return show_flow(entry, a.format)
    if not entry.ready:
        if entry.meta is None:
            raise Failed(f"task {a.id} is {UNKNOWN}; use --wait to wait for it")
        where = f" on {entry.worker}" if entry.worker else ""
        raise Failed(f"task {a.id} is {entry.state}{where}, not finished; "
                     f"use --wait to wait for it")
    meta = entry.meta
    result = meta.get("result")
    if entry.state != "SUCCESS":
        if a.format == "json":
            print(json.dumps({"id": a.id, "state": entry.state, "result": result}, indent=2))
        if entry.state == "REVOKED":
            raise Failed(f"task {a.id} was cancelled (REVOKED)")
        raise Failed(error_text(result) or entry.state)
    show_result(result, meta.get("name"), a.format)
    if isinstance(result, dict) and result.get("is_error"):
        raise Failed("the agent reported an error (is_error: true)")
    return EXIT_OK


def show_result(result, name: str | None, fmt: str) -> None:
    import json

    if fmt == "json":
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    is_query = isinstance(result, dict) and "columns" in result and "rows" in result
    if is_query:
        if fmt == "csv":
            import csv

            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(result["columns"])
            writer.writerows([[_csv_value(v) for v in row] for row in result["rows"]])
        else:
            table(list(result["columns"]), [[_cell(v) for v in row] for row in result["rows"]])
        shown, total = len(result["rows"]), result.get("row_count", len(result["rows"]))
        if result.get("truncated") or shown != total:
            where = f"; the full result is in {result['parquet_path']}" \
                if result.get("parquet_path") else ""
            sys.stderr.write(f"({shown} of {total} rows shown{where})\n")
        return
    if fmt == "csv":
        raise UsageError(f"--format csv applies to query results; this is a "
                         f"{name or 'non-query'} result (use json or table)")
    if isinstance(result, dict) and "result" in result:
        text = result.get("result")
        print(text if isinstance(text, str) else json.dumps(text, indent=2))
        facts = [f"{k}={result[k]}" for k in ("num_turns", "cost_usd", "duration_s",
                                                "session_id", "exit_code") if k in result]
        if facts:
            sys.stderr.write("(" + ", ".join(facts) + ")\n")
        return
    print(result if isinstance(result, str) else json.dumps(result, indent=2))


def _cell(value) -> str:
    import json

    if value is None:
        return "NULL"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _csv_value(value):
    import json

    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value


def show_flow(entry: Entry, fmt: str) -> int:
    import json

    if entry.flow is None:
        raise Failed(f"workflow {entry.id} is unknown (expired or never submitted)")
    if fmt == "json":
        print(json.dumps(entry.flow, indent=2))
    else:
        flow = entry.flow
        now = time.time()
        print(f"workflow {entry.id} {flow.get('name') or ''}: {entry.state} "
              f"({runtime(entry, now)})")
        headers = ["STEP", "KIND", "STATE", "WORKER", "RUNTIME", "DETAIL"]
        table(headers, [row[:5] + row[6:] for row in step_rows(entry, now, limit=None)])
    if not entry.ready:
        raise Failed(f"workflow {entry.id} is {entry.state}, not finished; "
                     f"use --wait to wait for it")
    if not entry.ok:
        raise Failed(f"workflow {entry.id} {entry.state}")
    return EXIT_OK


class Progress:
    """One status line on stderr: rewritten in place on a terminal, else on change."""

    def __init__(self, label: str):
        self.label, self.tty = label, sys.stderr.isatty()
        self.started = time.monotonic()
        self.last_text, self.last_print = None, 0.0

    def update(self, state: str) -> None:
        elapsed = time.monotonic() - self.started
        text = f"{self.label}: {state}"
        if self.tty:
            sys.stderr.write(f"\r\033[K{text} ({elapsed:.0f}s)")
        elif text != self.last_text or elapsed - self.last_print >= 15:
            sys.stderr.write(f"{text} ({elapsed:.0f}s)\n")
            self.last_print = elapsed
        else:
            return
        self.last_text = text
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty and self.last_text is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


def wait_for(r: resp.Redis, entry: Entry, timeout: float | None) -> Entry:
    deadline = None if timeout is None else time.monotonic() + timeout
    progress = Progress(("workflow " if entry.is_flow else "task ") + entry.id)
    try:
        if entry.is_flow:
            _wait_flow(r, entry, deadline, progress)
            progress.update(f"{entry.state} [{detail(entry)}]")
        else:
            _wait_task(r, entry, deadline, progress)
            progress.update(state_label(entry) + (f" on {entry.worker}" if entry.worker else ""))
        return entry  # the last line says how it ended, even when it was done at once
    finally:
        progress.done()


def _remaining(deadline: float | None) -> float:
    return 1.0 if deadline is None else deadline - time.monotonic()


def _timed_out(entry: Entry, timeout_label: str) -> Failed:
    return Failed(f"{'workflow' if entry.is_flow else 'task'} {entry.id} still "
                  f"{state_label(entry)} after {timeout_label}")


def _wait_flow(r, entry, deadline, progress) -> Entry:
    while not entry.ready:
        progress.update(f"{entry.state} [{detail(entry)}]")
        if _remaining(deadline) <= 0:
            raise _timed_out(entry, "the --timeout")
        time.sleep(max(0.0, min(0.5, _remaining(deadline))))
        fetch(r, [entry])
    return entry


def _wait_task(r, entry, deadline, progress) -> Entry:
    """SUBSCRIBE to the result's channel (the Redis backend PUBLISHes every state)."""
    if entry.ready:
        return entry
    channel = META_KEY.format(id=entry.id)
    sub = r.dedicated()
    sub.connection.pipeline([("SUBSCRIBE", channel)])
    try:
        fetch(r, [entry])  # may have finished before we subscribed
        last_get = time.monotonic()
        while not entry.ready:
            progress.update(state_label(entry) + (f" on {entry.worker}" if entry.worker else ""))
            left = _remaining(deadline)
            if left <= 0:
                raise _timed_out(entry, "the --timeout")
            if sub.connection.has_data(min(1.0, left)):
                message = sub.connection.read_reply()
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                    entry.meta = _loads(message[2])
                    continue
            if time.monotonic() - last_get >= 5:  # a safety net for a missed message
                fetch(r, [entry])
                last_get = time.monotonic()
    finally:
        sub.connection.close()
    return entry


# --- cancel --------------------------------------------------------------------------

def cmd_cancel(a) -> int:
    r = backend()
    entry = fetch(r, [Entry(a.id)])[0]
    if entry.is_flow:
        if entry.ready:
            print(f"workflow {a.id} already finished: {entry.state}")
            return EXIT_OK
        try:
            from celeryapp.flows import cancel
        except ImportError as exc:
            raise Failed(f"workflows are not available (cannot import celeryapp.flows: {exc})")
        state = cancel(a.id) or {}
        stopped = [name for name, step in (state.get("steps") or {}).items()
                   if step.get("state") == "cancelled"]
        print(f"workflow {a.id}: {state.get('state', 'cancel requested')}"
              + (f" (steps cancelled: {', '.join(stopped)})" if stopped else ""))
        return EXIT_OK
    if entry.ready:
        print(f"task {a.id} already finished: {entry.state}")
        return EXIT_OK
    from celeryapp import app

    app.control.revoke(a.id, terminate=True, signal="SIGUSR1")
    # a queued task turns REVOKED only when a worker receives it: no point waiting
    deadline = time.monotonic() + (a.wait if entry.meta is not None else 0)
    while time.monotonic() < deadline:
        fetch(r, [entry])
        if entry.ready:
            break
        time.sleep(0.2)
    if entry.ready:
        print(f"task {a.id}: {entry.state}")
    elif entry.meta is None:
        print(f"task {a.id}: revoke sent; it has not started, and a worker drops it "
              f"when it receives it")
    else:
        print(f"task {a.id}: revoke sent; still {entry.state} after {a.wait:g}s")
    return EXIT_OK


# --- argument parsing ------------------------------------------------------------------
# One table drives two parsers: a small one for the hot path (argparse and the
# shutil/locale modules it loads cost more than a submit) and argparse, built
# from the same table, for --help and for every error message. Anything the
# small parser is unsure about (help, abbreviations, a bad value) goes to argparse.

PRIORITY_HELP = "critical|high|normal|low (or 0-9, 0 first)"


class Opt:
    __slots__ = ("flags", "dest", "kind", "help", "metavar", "default")

    def __init__(self, flags, kind="str", help=None, metavar=None, default=None, dest=None):
        self.flags = (flags,) if isinstance(flags, str) else tuple(flags)
        self.dest = dest or self.flags[0].lstrip("-").replace("-", "_")
        self.kind, self.help, self.metavar, self.default = kind, help, metavar, default


class Command:
    __slots__ = ("path", "func", "help", "positionals", "options", "by_flag")

    def __init__(self, path, func, help, positionals, options):
        self.path, self.func, self.help = path, func, help
        self.positionals = positionals  # [(dest, help, nargs)]; nargs None or "*"
        self.options = options
        self.by_flag = {flag: opt for opt in options for flag in opt.flags}


def _common_options(timeout_env: str) -> list[Opt]:
    return [
        Opt("--timeout", "number", f"seconds before the run is stopped (default {timeout_env})",
            "S"),
        Opt("--retries", "int", "retries on transient errors (default TURBO_MAX_RETRIES)", "N"),
        Opt("--priority", "str", PRIORITY_HELP, "P"),
    ]


COMMANDS = [
    Command(("submit", "query"), cmd_submit_query, "run SQL on a worker; prints the task id",
            [("sql", "the SQL statement, or - to read it from stdin", None)], [
                Opt("--engine", help="engine name (default: the worker's TURBO_DEFAULT_ENGINE)"),
                Opt(("--params", "--param"), metavar="JSON",
                    help='bound parameters as a JSON list or object: \'[1, "x"]\' or '
                         '\'{"d": 1}\''),
                Opt("--max-inline-rows", "int",
                    "rows returned inline before the result spills to Parquet", "N"),
                *_common_options("TURBO_QUERY_TIMEOUT"),
                Opt("--queue", help=f"queue (default {C.QUERY_QUEUE})"),
            ]),
    Command(("submit", "agent"), cmd_submit_agent,
            "run a headless agent CLI on a worker; prints the task id",
            [("prompt", "the prompt, or - to read it from stdin", None)], [
                Opt("--profile", help="agent CLI profile: claude (default), codex, gemini"),
                Opt("--model"),
                Opt("--max-turns", "int", metavar="N"),
                Opt("--cwd", metavar="DIR",
                    help="working directory on the worker (a relative path is made "
                         "absolute here)"),
                Opt("--allowed-tools", metavar="A,B", help="comma-separated tool names"),
                Opt("--permission-mode", metavar="MODE"),
                Opt("--append-system-prompt", metavar="TEXT"),
                *_common_options("TURBO_AGENT_TIMEOUT"),
                Opt("--queue", help=f"queue (default {C.AGENT_QUEUE})"),
                Opt("--host", help="run on this worker host (its queue host.HOST)"),
            ]),
    Command(("submit", "flow"), cmd_submit_flow,
            "start a workflow from a YAML/JSON file; prints the workflow id",
            [("file", "the workflow spec file, or - for JSON/YAML on stdin", None)], [
                Opt("--notify", metavar="URL|DIR",
                    help="when the workflow ends, POST to this http(s) URL or write a "
                         "report file into this directory (overrides the spec's notify)"),
            ]),
    Command(("status",), cmd_status,
            "state of tasks and workflows (default: the 20 most recent)",
            [("ids", "task or workflow ids", "*")], [
                Opt("-n", "int", "how many recent ones without IDs (default 20)", default=20),
                Opt("--json", "flag", "machine-readable output", default=False),
            ]),
    Command(("result",), cmd_result, "print a result (exit 1 if it failed or is not done)",
            [("id", "task or workflow id", None)], [
                Opt("--wait", "flag", "wait until it finishes", default=False),
                Opt("--timeout", "float", "give up waiting after S seconds", "S"),
                Opt("--format", ("table", "json", "csv"), "output format (default table)",
                    default="table"),
            ]),
    Command(("cancel",), cmd_cancel, "cancel a task (revoke + terminate) or a workflow",
            [("id", "task or workflow id", None)], [
                Opt("--wait", "float", "seconds to wait for the task to stop (default 10)", "S",
                    default=10.0),
            ]),
    Command(("ls",), cmd_ls, "recent tasks and workflows with their state", [], [
        Opt("-n", "int", "how many (default 20)", default=20),
    ]),
]


class Args:
    """What argparse's Namespace holds, without argparse."""

    def __init__(self, **values):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Args({self.__dict__!r})"


def _convert(kind, text: str):
    """A value for an option of ``kind``; ValueError when it does not fit."""
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "number":
        return _number(text)
    if text not in kind:  # choices
        raise ValueError(text)
    return text


def _looks_like_option(token: str) -> bool:
    if not token.startswith("-") or token == "-":
        return False
    try:
        float(token)  # argparse takes negative numbers as values
        return False
    except ValueError:
        return True


def fast_parse(argv: list[str]):
    """Parse ``argv`` like argparse would, or return None to let argparse do it."""
    command = None
    for candidate in COMMANDS:
        if tuple(argv[:len(candidate.path)]) == candidate.path:
            command = candidate
            break
    if command is None:
        return None
    values = {"command": command.path[0], "func": command.func}
    if len(command.path) > 1:
        values["kind"] = command.path[1]
    for opt in command.options:
        values[opt.dest] = opt.default
    positionals: list[str] = []
    rest = argv[len(command.path):]
    index, options_done = 0, False
    while index < len(rest):
        token = rest[index]
        index += 1
        if not options_done and token == "--":
            options_done = True
            continue
        if options_done or not _looks_like_option(token):
            positionals.append(token)
            continue
        name, has_value, value = token.partition("=")
        opt = command.by_flag.get(name)
        if opt is None:  # -h, abbreviations, unknown options
            return None
        if opt.kind == "flag":
            if has_value:
                return None
            values[opt.dest] = True
            continue
        if not has_value:
            if index >= len(rest) or _looks_like_option(rest[index]):
                return None
            value = rest[index]
            index += 1
        try:
            values[opt.dest] = _convert(opt.kind, value)
        except (ValueError, UsageError):
            return None
    for dest, _, nargs in command.positionals:
        if nargs == "*":
            values[dest], positionals = positionals, []
        elif positionals:
            values[dest] = positionals.pop(0)
        else:
            return None
    if positionals:
        return None
    return Args(**values)


def build_parser():
    """The argparse parser built from :data:`COMMANDS` (help and error messages)."""
    import argparse

    def typed(kind):
        if kind == "str":
            return {}
        if kind == "flag":
            return {"action": "store_true"}
        if isinstance(kind, tuple):
            return {"choices": kind}

        def convert(text):
            try:
                return _convert(kind, text)
            except (ValueError, UsageError):
                raise argparse.ArgumentTypeError(
                    f"expected {'a whole number' if kind == 'int' else 'a number'}, "
                    f"got {text!r}") from None
        convert.__name__ = kind
        return {"type": convert}

    parser = argparse.ArgumentParser(
        prog="turbo", description="Submit and follow Agent Turbo queries, agent runs and "
        "workflows. Exit codes: 0 ok, 1 failed / not finished / not found, 2 usage error, "
        "3 Redis unreachable or refused the credentials.")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    submit = top.add_parser("submit", help="submit a query, agent run or workflow; "
                            "prints its id at once")
    kinds = submit.add_subparsers(dest="kind", metavar="KIND", required=True)
    for command in COMMANDS:
        group = kinds if command.path[0] == "submit" else top
        sub = group.add_parser(command.path[-1], help=command.help, description=command.help)
        for dest, help, nargs in command.positionals:
            sub.add_argument(dest, help=help, **({"nargs": nargs} if nargs else {}),
                             **({"metavar": "ID"} if dest == "ids" else {}))
        for opt in command.options:
            extra = typed(opt.kind)
            if opt.metavar and "action" not in extra:
                extra["metavar"] = opt.metavar
            sub.add_argument(*opt.flags, dest=opt.dest, help=opt.help, default=opt.default,
                             **extra)
        sub.set_defaults(func=command.func)
    return parser


def parse_args(argv: list[str]):
    return fast_parse(argv) or build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.func(args)
    except UsageError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except Failed as exc:
        return _fail(str(exc), EXIT_FAILED)
    except resp.RedisConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except (resp.RedisUnavailable, resp.RedisAuthError) as exc:
        return _fail(str(exc), EXIT_REDIS)
    except resp.ReplyError as exc:
        return _fail(f"Redis error: {exc}", EXIT_REDIS)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        resp.close_all()


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"turbo: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
