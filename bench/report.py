"""The one table: metric, plain Celery, Agent Turbo, target, met? - and the machine it ran on."""
from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata

from rich.console import Console
from rich.table import Table


def machine_info() -> dict:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "celery": version("celery"), "kombu": version("kombu"), "redis_py": version("redis"),
        "billiard": version("billiard"), "duckdb": version("duckdb"),
        "pyarrow": version("pyarrow"),
        "redis_server": _redis_server_version(),
        "loadavg_at_start": os.getloadavg(),
        "other_celery_processes_at_start": _count_celery_processes(),
    }


def _cpu_model() -> str | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _redis_server_version() -> str | None:
    from celeryapp.dev.localredis import find_redis_server

    try:
        out = subprocess.run([find_redis_server(), "--version"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((part[2:] for part in out.split() if part.startswith("v=")), out.strip())


def _count_celery_processes() -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if b"celery" in handle.read():
                        count += 1
            except OSError:
                pass
    return count


# --- rows ---------------------------------------------------------------------------------
def _yes(ok: bool | None) -> str:
    return "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")


Add = Callable[..., None]  # add(metric, plain, turbo, target="", ok=None)


def _delay_rows(f: dict, add: Add) -> None:
    add(f"delay() p50 ({f['calls']} calls; turbo: run_query.delay)",
        f"{f['plain']['p50']:.0f} µs", f"{f['turbo']['p50']:.0f} µs", "≤ 200 µs",
        f["turbo"]["p50"] <= 200)
    add("delay() p99", f"{f['plain']['p99']:.0f} µs", f"{f['turbo']['p99']:.0f} µs")
    add("delay() p50, bench.noop on each app", f"{f['plain']['p50']:.0f} µs",
        f"{f['turbo_noop']['p50']:.0f} µs")
    g = f.get("group")
    if g:
        add(f"group of {g['size']:,} no-ops submitted, per task (turbo: apply_group)",
            f"{g['plain_us_per_task']:.0f} µs", f"{g['turbo_us_per_task']:.0f} µs")


def _throughput_rows(f: dict, add: Add) -> None:
    rounds = f.get("rounds", 1)
    add(f"no-op throughput, {f['tasks']:,} tasks, -c {f['concurrency']}, results stored"
        + (f" (median of {rounds} alternating rounds)" if rounds > 1 else ""),
        f"{f['plain']['tasks_per_s']:.0f}/s ({f['plain']['wall_s']:.2f} s)",
        f"{f['turbo']['tasks_per_s']:.0f}/s ({f['turbo']['wall_s']:.2f} s) "
        f"= {f['ratio']:.2f}× plain", "≥ 3× plain", f["ratio"] >= 3)
    if "cpu_ms_per_task" in f["plain"] and "cpu_ms_per_task" in f["turbo"]:
        def cpu(c: dict) -> str:
            return (f"{c['total']:.2f} = {c['client']:.2f} + {c['worker_main']:.2f} + "
                    f"{c['pool_children']:.2f} + {c['redis']:.2f}")

        add("  CPU ms per task: client + worker main + pool children + Redis",
            cpu(f["plain"]["cpu_ms_per_task"]), cpu(f["turbo"]["cpu_ms_per_task"]))
    g = f.get("as_group")
    if g:
        add("  the same, submitted as one group (turbo: apply_group)",
            f"{g['plain']['tasks_per_s']:.0f}/s", f"{g['turbo']['tasks_per_s']:.0f}/s "
            f"= {g['ratio']:.2f}× plain")
    for name, v in (f.get("ablation") or {}).items():
        add(f"  ablation: project worker without {name}", "",
            f"{v['tasks_per_s']:.0f}/s = {v['tasks_per_s'] / f['plain']['tasks_per_s']:.2f}× plain")


def _parallel_rows(f: dict, add: Add) -> None:
    top = max(f["slots"])
    for n in f["slots"]:
        p, t = f["plain"][str(n)], f["turbo"][str(n)]
        add(f"parallel efficiency, {f['tasks']} × {f['sleep_s']:g} s, -c {n} "
            f"(issue formula)", f"{100 * p['efficiency']:.1f} % ({p['wall_s']:.2f} s)",
            f"{100 * t['efficiency']:.1f} % ({t['wall_s']:.2f} s)",
            f"≥ 95 % (max possible {100 * t['ideal_s'] / t['best_schedule_s']:.1f} %)"
            if n == top else "", None)
    p, t = f["plain"][str(top)], f["turbo"][str(top)]
    add(f"parallel efficiency, -c {top}, vs ceil(tasks/N) × {f['sleep_s']:g} s",
        f"{100 * p['schedule_efficiency']:.1f} %", f"{100 * t['schedule_efficiency']:.1f} %",
        "≥ 95 %", t["schedule_efficiency"] >= 0.95)


def _chord_rows(f: dict, add: Add) -> None:
    add(f"chord: body start after the last of {f['headers']:,} headers",
        f"{f['plain']['lag_ms']:.1f} ms", f"{f['turbo']['lag_ms']:.1f} ms", "≤ 100 ms",
        f["turbo"]["lag_ms"] <= 100)


def _dag_rows(f: dict, add: Add) -> None:
    add(f"DAG makespan, A→C A→D B→D (critical path {f['critical_path_s']:g} s)",
        f"{f['plain']['makespan_s']:.3f} s ({f['plain']['ratio']:.3f}× CP)",
        f"{f['turbo']['makespan_s']:.3f} s ({f['turbo']['ratio']:.3f}× CP)",
        "report (canvas floor 4/3×)")


def _flow_scale_rows(f: dict, add: Add) -> None:
    for shape in f["shapes"]:
        canvas, flow = shape["canvas"], shape["workflow"]
        what = ("fan-out/fan-in" if shape["kind"] == "fanout" else "chain")
        unit = "per step" if shape["kind"] == "fanout" else "per edge"
        done = flow.get("finished", True)
        add(f"workflow vs canvas, {what} of {shape['steps']:,} noop steps",
            f"{canvas['wall_s']:.2f} s",
            (f"{flow['wall_s']:.2f} s ({shape['ratio']:.2f}×, "
             f"{shape['beyond_canvas_ms']:+.2f} ms {unit})") if done
            else f"did not finish in {flow['deadline_s']:.0f} s",
            "≤ 1.15× (fan-out), ≤ +5 ms per edge (chain)",
            done and (shape["ratio"] <= 1.15 if shape["kind"] == "fanout"
                      else shape["beyond_canvas_ms"] <= 5))


def _rows_rows(f: dict, add: Add) -> None:
    add(f"{f['rows']:,}-row DuckDB result, submit → rows in the client",
        f"{f['plain']['wall_s']:.3f} s (inline JSON)",
        f"{f['turbo']['wall_s']:.3f} s (Parquet → pyarrow)", "≤ 2 s",
        f["turbo"]["wall_s"] <= 2)


def _shell_rows(f: dict, add: Add) -> None:
    add("shell submit p50 (plain: celery call; turbo: turbo submit query)",
        f"{f['plain_submit']['p50_ms']:.1f} ms", f"{f['turbo_submit']['p50_ms']:.1f} ms",
        "≤ 30 ms", f["turbo_submit"]["p50_ms"] <= 30)
    add("shell submit p50 via celery call", f"{f['plain_submit']['p50_ms']:.1f} ms",
        f"{f['turbo_celery_call']['p50_ms']:.1f} ms")
    add("shell status p50 (plain: celery result; turbo: turbo status)",
        f"{f['plain_status']['p50_ms']:.1f} ms", f"{f['turbo_status']['p50_ms']:.1f} ms")
    add("  python -c pass (interpreter floor)", f"{f['floor']['p50_ms']:.1f} ms",
        f"{f['floor']['p50_ms']:.1f} ms")


def _query_throughput_rows(f: dict, add: Add) -> None:
    s = f["select_one"]
    add(f"SELECT 1 queries, {s['tasks']:,} tasks, -c {s['concurrency']} (plain: no-op tasks)",
        f"{s['plain']['tasks_per_s']:.0f}/s",
        f"{s['turbo']['tasks_per_s']:.0f}/s = {s['ratio']:.2f}× plain", "≥ 0.5× plain",
        s["ratio"] >= 0.5)
    a = f["aggregates"]
    add(f"{len(a['queries'])} aggregates over {a['rows']:,} rows: {a['workers']} workers × "
        f"{a['slots']} slots vs one after another in one process", "",
        f"{a['side_by_side']['wall_s']:.2f} s vs {a['sequential']['wall_s']:.2f} s "
        f"= {a['ratio']:.2f}×", "≥ 1.0×", a["ratio"] >= 1.0)


def _agent_pool_rows(f: dict, add: Add) -> None:
    io, pf = f["io"], f["prefork"]

    def side(s: dict) -> str:
        return (f"{100 * s['efficiency']:.1f} % ({s['makespan_s']:.2f} s), "
                f"{s['pss_busy'].get('worker_mb', float('nan')):.0f} MB")

    add(f"{f['runs']} × {f['sleep_s']:g} s agent runs: makespan vs ideal, worker PSS "
        f"(plain column: prefork -c {pf['slots']}; turbo: io worker, threads -c {io['slots']})",
        side(pf), side(io), "≥ 95 %, ≤ 250 MB", f["met"]["efficiency"] and f["met"]["pss"])


def _agent_modes_rows(f: dict, add: Add) -> None:
    for name, row in f["rows"].items():
        add(f"real claude, {name}: caller sees, attempts, API calls, wall time, CLIs left",
            f["before"].get(name, ""),
            f"{row['caller_sees']}, {row['attempts']} att., {row['api_calls_counted']} "
            f"calls (stated {row['api_calls_stated']}), {row['wall_s']:g} s, "
            f"{row['cli_processes_left']} left")
    add("agent failure modes: the slowest failure (timeout excepted); stated = counted",
        "733 s", f"{f['worst_failure_s']:g} s; {f['calls_match']}", "≤ 60 s",
        f["worst_failure_s"] <= 60 and f["calls_match"])


def _memory_rows(f: dict, add: Add) -> None:
    add(f"worker PSS per slot, -c {f['slots']} (turbo: engines loaded; plain: idle)",
        f"{f['plain']['per_slot_mb']:.1f} MB", f"{f['turbo']['per_slot_mb']:.1f} MB",
        "≤ 40 MB", f["turbo"]["per_slot_mb"] <= 40)
    if "uss_per_slot_mb" in f["plain"] and "uss_per_slot_mb" in f["turbo"]:
        add("  USS per slot (private pages: what other programs' mappings do not change)",
            f"{f['plain']['uss_per_slot_mb']:.1f} MB", f"{f['turbo']['uss_per_slot_mb']:.1f} MB")
    for count, row in f.get("more_slots", {}).items():
        add(f"  PSS per slot at -c {count}", f"{row['plain']['per_slot_mb']:.1f} MB",
            f"{row['turbo']['per_slot_mb']:.1f} MB")
    if "added_slot_mb" in f:
        counts = list(f["more_slots"])
        add(f"  PSS of each slot added (-c {counts[0]} → {counts[-1]})",
            f"{f['added_slot_mb']['plain']:.1f} MB", f"{f['added_slot_mb']['turbo']:.1f} MB")


# each benchmark's figures and the rows that show them, in the table's order
SECTIONS: list[tuple[str, str, Callable[[dict, Add], None]]] = [
    ("delay", "delay()", _delay_rows),
    ("throughput", "throughput", _throughput_rows),
    ("parallel", "parallel", _parallel_rows),
    ("chord", "chord", _chord_rows),
    ("dag", "dag", _dag_rows),
    ("flow_scale", "flow_scale", _flow_scale_rows),
    ("rows", "rows", _rows_rows),
    ("shell", "shell", _shell_rows),
    ("query_throughput", "query_throughput", _query_throughput_rows),
    ("agent_pool", "agent_pool", _agent_pool_rows),
    ("agent_modes", "agent_modes", _agent_modes_rows),
    ("memory", "memory", _memory_rows),
]


def rows(figures: dict) -> list[tuple[str, str, str, str, str]]:
    out: list[tuple[str, str, str, str, str]] = []

    def add(metric, plain, turbo, target="", ok=None):
        out.append((metric, plain, turbo, target, _yes(ok)))

    for key, label, section in SECTIONS:
        f = figures.get(key)
        if f and "error" not in f:
            section(f, add)
        elif f:
            add(f"{label}: [red]failed[/]", "", "", "", None)
    return out


def print_table(figures: dict, machine: dict, quick: bool) -> None:
    title = (f"Agent Turbo vs plain Celery, same Redis - {machine['nproc']} CPUs, "
             f"Python {machine['python']}, Celery {machine['celery']}, kombu "
             f"{machine['kombu']}, redis-py {machine['redis_py']}"
             + (" [yellow](--quick: reduced sizes, targets not comparable)[/]" if quick else ""))
    table = Table(title=title, show_lines=False)
    table.add_column("metric")
    table.add_column("plain Celery", justify="right")
    table.add_column("Agent Turbo", justify="right")
    table.add_column("target")
    table.add_column("met?", justify="center")
    for row in rows(figures):
        table.add_row(*row)
    Console(width=max(160, Console().width)).print(table)
    errors = {name: f["error"] for name, f in figures.items() if isinstance(f, dict)
              and "error" in f}
    for name, error in errors.items():
        Console().print(f"[red]{name} failed:[/] {error}")
