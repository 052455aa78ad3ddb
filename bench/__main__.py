"""`python -m bench`: this project against a plain Celery app, same private Redis, one run.

    python -m bench                          # everything (`make bench`), ~5 min on 2 cores
    python -m bench --only throughput,chord  # a subset
    python -m bench --quick                  # reduced sizes: a smoke run
    python -m bench --only throughput --profile   # + py-spy samples of the workers
    python -m bench --only throughput --ablate    # + the project's worker minus each cost

Benchmarks (one module each, ``run(ctx) -> dict``), in this order: memory, delay,
throughput, parallel, chord, dag, flow_scale, rows, query_throughput, shell, agent_pool,
agent_modes. Prints one table (metric, plain
Celery, Agent Turbo, target, met?) and writes every figure, with the machine's
description, to var/bench/results.json. Run by hand, never part of CI.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import time
import traceback
from pathlib import Path

# memory first: later benchmarks load pyarrow into this process, and a process that
# maps the worker's libraries lowers the worker's PSS (bench/memory.py)
BENCHES = {
    "memory": "bench.memory",
    "delay": "bench.delay_latency",
    "throughput": "bench.throughput",
    "parallel": "bench.parallel",
    "chord": "bench.chord_fanin",
    "dag": "bench.dag",
    "flow_scale": "bench.flow_scale",
    "rows": "bench.rows",
    "query_throughput": "bench.query_throughput",
    "shell": "bench.shell",
    "agent_pool": "bench.agent_pool",
    "agent_modes": "bench.agent_modes",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (smoke run)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the workers with py-spy during the throughput run "
                             "(py-spy from the bench extra, PATH or BENCH_PYSPY)")
    parser.add_argument("--ablate", action="store_true",
                        help="throughput: also run the project's worker with each per-task "
                             "cost switched off (bench/turbo_variant.py)")
    parser.add_argument("--out", type=Path,
                        help="JSON file (default var/bench/results.json; "
                             "var/bench/results-quick.json with --quick)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("var/bench") / ("results-quick.json" if args.quick else "results.json")
    names = list(BENCHES)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in BENCHES]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}; "
                         f"choose from {', '.join(BENCHES)}")

    from .context import BenchContext
    from .report import machine_info, print_table

    machine = machine_info()
    print(f"bench: {', '.join(names)}{' (quick)' if args.quick else ''} on "
          f"{machine['nproc']} CPUs, load {machine['loadavg_at_start'][0]:.2f}, "
          f"{machine['other_celery_processes_at_start']} other celery processes", flush=True)
    figures: dict = {}
    started = time.monotonic()
    with BenchContext.open(quick=args.quick, profile=args.profile,
                           out_dir=args.out.parent) as ctx:
        ctx.ablate = args.ablate
        for name in names:
            print(f"[{name}]", flush=True)
            begun = time.monotonic()
            try:
                figures[name] = importlib.import_module(BENCHES[name]).run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others
                traceback.print_exc()
                figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
            figures[name]["bench_s"] = round(time.monotonic() - begun, 2)
        profiles = dict(ctx.profiles)
    machine["loadavg_at_end"] = os.getloadavg()
    machine["total_s"] = round(time.monotonic() - started, 1)
    print_table(figures, machine, args.quick)
    document = {"machine": machine, "quick": args.quick, "benchmarks": figures}
    if profiles:
        document["profiles"] = profiles
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str))
    print(f"figures written to {args.out} ({machine['total_s']:.0f} s)")
    return 1 if any("error" in f for f in figures.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
