"""Wall time of one shell call: ``turbo submit``/``status`` vs ``celery call`` vs ``.delay()``.

Each call is a new process, as when a person or a coding agent runs it; the
time is what the caller waits, start to exit. A private redis-server is
started (no worker: only the submit side is measured).

    python -m bench.shell_wall [-n 40] [--slow-n 8] [--json var/bench/shell_wall.json]

Notes printed with the figures:
* ``python -c pass`` is the floor: interpreter + site start-up of this venv.
  An editable install (``pip install -e``) adds setuptools' import finder to
  every start-up (about 10 ms here); a normal install does not. The ``python -S``
  row runs the same client without site (the lean path needs only the standard
  library and this checkout, the working directory): the cost of the client
  itself above a bare interpreter.
* Bytecode is written on the warm-up run (PYTHONDONTWRITEBYTECODE is unset for
  the measured processes), as it is for any installed package.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": pick(0.50), "p90_ms": pick(0.90), "min_ms": ordered[0] * 1000,
            "n": len(ordered)}


def time_command(cmd: list[str], env: dict, n: int, warmup: int = 2) -> tuple[dict, str]:
    out = ""
    for _ in range(warmup):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
        out = done.stdout
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       cwd=ROOT)
        samples.append(time.perf_counter() - start)
    return percentiles(samples), out


def turbo_command() -> list[str]:
    script = BIN / "turbo"
    if script.exists():
        return [str(script)]
    found = shutil.which("turbo")
    return [found] if found else [sys.executable, "-m", "celeryapp.shell.cli"]


def run(n: int, slow_n: int) -> dict:
    from celeryapp.dev.localredis import LocalRedis

    with tempfile.TemporaryDirectory(prefix="turbo-shell-bench-") as tmp:
        redis = LocalRedis(workdir=Path(tmp) / "redis", password="bench").start()
        try:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env.update(TURBO_BROKER_URL=f"{redis.url}/0", TURBO_RESULT_BACKEND=f"{redis.url}/1")
            turbo = turbo_command()
            python = sys.executable
            task_id = subprocess.run([*turbo, "submit", "query", "SELECT 1"], env=env,
                                     capture_output=True, text=True, check=True).stdout.strip()
            cases = [
                ("python -c pass (interpreter floor)", [python, "-c", "pass"], n),
                ("python -S -c pass (no site)", [python, "-S", "-c", "pass"], n),
                ("import celeryapp.shell.cli", [python, "-c", "import celeryapp.shell.cli"], n),
                ("turbo submit query", [*turbo, "submit", "query", "SELECT 1"], n),
                ("turbo submit query, python -S (no site)",
                 [python, "-S", "-c", "import sys; from celeryapp.shell.cli import main; "
                  "sys.exit(main())", "submit", "query", "SELECT 1"], n),
                ("turbo status ID", [*turbo, "status", task_id], n),
                ("turbo status (20 recent)", [*turbo, "status"], n),
                ("turbo ls", [*turbo, "ls"], n),
                ("celery -A celeryapp call turbo.query",
                 [str(BIN / "celery"), "-A", "celeryapp", "call", "turbo.query",
                  "--args", '["SELECT 1"]'], slow_n),
                ("python -c run_query.delay()",
                 [python, "-c", "from tasks.query import run_query; "
                  "print(run_query.delay('SELECT 1').id)"], slow_n),
            ]
            figures = {}
            for label, cmd, count in cases:
                figures[label], _ = time_command(cmd, env, count)
                print(f"  {label:<40} p50 {figures[label]['p50_ms']:7.1f} ms   "
                      f"p90 {figures[label]['p90_ms']:7.1f} ms   (n={count})", flush=True)
        finally:
            redis.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=40, help="runs per turbo command")
    parser.add_argument("--slow-n", type=int, default=8, help="runs of celery call / .delay()")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    print(f"wall time per call, new process each ({os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}):", flush=True)
    figures = run(args.n, args.slow_n)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
