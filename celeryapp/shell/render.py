"""How ``turbo`` prints: durations, tables, status rows, results and a progress line."""
from __future__ import annotations

import sys
import time

from .common import UNKNOWN, UsageError
from .entries import Entry


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


FACT_KEYS = ("session_id", "num_turns", "cost_usd", "attempts", "api_calls", "api_error_status",
             "exit_code", "workdir", "host")


def facts(details: dict) -> str:
    """The details of an error a person acts on (resume, pay, retry), one line."""
    shown = [f"{key} {details[key]}" for key in FACT_KEYS if details.get(key) is not None]
    return f"details: {', '.join(shown)}" if shown else ""


def error_text(result) -> str:
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            # TurboError args: (message, details) - the details as "key value" facts
            parts = [str(part) if not isinstance(part, dict) else facts(part)
                     for part in message]
            message = "\n".join(part for part in parts if part)
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
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
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


def entry_json(entry: Entry) -> dict:
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
