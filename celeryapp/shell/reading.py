"""``turbo status``, ``ls``, ``result`` (with ``--wait``) and ``cancel``."""
from __future__ import annotations

import time

from . import resp
from .common import EXIT_FAILED, EXIT_OK, META_KEY, UNKNOWN, Failed, backend
from .entries import (
    Entry,
    fetch,
    find_started,
    flow_summary_line,
    known,
    load_meta,
    recent,
    submitted_times,
)
from .render import (
    STATUS_HEADERS,
    Progress,
    detail,
    entry_json,
    error_text,
    runtime,
    seconds,
    show_result,
    state_label,
    status_rows,
    step_rows,
    table,
)


def cmd_status(a) -> int:
    import json

    r = backend()
    steps = "all" if a.json else "summary"  # a big workflow: counts, failed and running
    if a.ids:
        entries = fetch(r, [Entry(i) for i in a.ids], steps)
        submitted = submitted_times(r, entries)
        for entry in entries:
            entry.submitted = submitted.get(entry.id)
    else:
        entries = fetch(r, recent(r, a.n), steps)
    if not entries:
        print("no recent tasks or workflows")
        return EXIT_OK
    find_started(entries)
    if a.json:
        print(json.dumps([entry_json(e) for e in entries], indent=2))
    else:
        table(STATUS_HEADERS, _status_rows(entries))
    if a.ids and not all(known(e) for e in entries):
        return EXIT_FAILED  # an id nobody has heard of: not found
    return EXIT_OK


def cmd_ls(a) -> int:
    r = backend()
    entries = fetch(r, recent(r, a.n), "none")
    if not entries:
        print("no recent tasks or workflows")
        return EXIT_OK
    now = time.time()
    table(["ID", "KIND", "STATE", "SUBMITTED", "DETAIL"],
          [[e.id, e.name, state_label(e), seconds(now - e.submitted) + " ago", _detail(e)]
           for e in entries])
    return EXIT_OK


def cmd_result(a) -> int:
    import json

    r = backend()
    entry = fetch(r, [Entry(a.id)], "none")[0]
    if a.wait:  # also when already done: stderr then says how it ended
        entry = wait_for(r, entry, a.timeout)
    if entry.is_flow:
        fetch(r, [entry])  # every step
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


def _detail(entry: Entry) -> str:
    return flow_summary_line(entry.flow) if entry.flow is not None else detail(entry)


def _status_rows(entries: list[Entry]) -> list[list]:
    """render.status_rows, but a workflow's line counts its steps by state and lists the
    steps read: all of a small workflow, the failed and in-flight ones of a big one."""
    rows = []
    now = time.time()
    for entry in entries:
        if entry.flow is None:
            rows.extend(status_rows([entry]))
            continue
        head = status_rows([entry], with_steps=False)[0]
        head[-1] = _detail(entry)
        rows.append(head)
        steps = step_rows(entry, now)
        hidden = entry.flow.get("total", 0) - len(entry.flow.get("steps") or {})
        if entry.flow.get("partial") and hidden > 0:
            if steps:
                steps[-1][0] = steps[-1][0].replace("└", "├", 1)
            steps.append(["  └ …", "", "", "", "", "",
                          f"{hidden:,} more steps (turbo result {entry.id} --format json "
                          f"lists every step)"])
        rows.extend(steps)
    return rows


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


def wait_for(r: resp.Redis, entry: Entry, timeout: float | None) -> Entry:
    deadline = None if timeout is None else time.monotonic() + timeout
    progress = Progress(("workflow " if entry.is_flow else "task ") + entry.id)
    try:
        if entry.is_flow:
            _wait_flow(r, entry, deadline, progress)
            progress.update(f"{entry.state} [{_detail(entry)}]")
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
        progress.update(f"{entry.state} [{_detail(entry)}]")
        if _remaining(deadline) <= 0:
            raise _timed_out(entry, "the --timeout")
        time.sleep(max(0.0, min(0.5, _remaining(deadline))))
        fetch(r, [entry], "none")  # counts only, whatever the size
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
                    entry.meta = load_meta(message[2])
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
    entry = fetch(r, [Entry(a.id)], "none")[0]
    if entry.is_flow:
        if entry.ready:
            print(f"workflow {a.id} already finished: {entry.state}")
            return EXIT_OK
        try:
            from celeryapp.flows import cancel
        except ImportError as exc:
            raise Failed(f"workflows are not available (cannot import celeryapp.flows: {exc})") \
                from None
        state = cancel(a.id) or {}
        stopped = [name for name, step in (state.get("steps") or {}).items()
                   if step.get("state") == "cancelled"]
        print(f"workflow {a.id}: {state.get('state', 'cancel requested')}"
              + (f" (steps cancelled: {', '.join(stopped)})" if stopped else ""))
        return EXIT_OK
    if entry.ready:
        print(f"task {a.id} already finished: {entry.state}")
        return EXIT_OK
    from celeryapp.factory import app  # Celery's revoke broadcast: the one heavy path here

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
