"""``make test``: the whole suite in two parts.

1. Every test not marked ``serial``, spread over ``TURBO_TEST_WORKERS`` pytest-xdist
   workers (default 4: the suite mostly waits on workers, Redis and sleeps, so more
   processes than this machine's 2 cores pay off), one test file per worker at a time
   (``--dist loadfile``: module fixtures are built once). Each xdist worker has its own
   redis-server, temp dir and shared Celery worker (tests/conftest.py).
2. The ``serial`` tests (timing-bound fault tests: heartbeats, leases, kills, parallel
   makespans), one after another with nothing else running, so that no other test's load
   can make them flake.

Arguments go to both parts (``make test PYTEST_ARGS="-q -x"``); a part that selects no
test (pytest's exit code 5) is not a failure. The exit code is the first failure's.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

NO_TESTS = 5


def run(part: str, argv: list[str]) -> int:
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "pytest", *argv])
    print(f"\n== {part}: exit {code} in {time.monotonic() - started:.0f} s ==\n", flush=True)
    return 0 if code == NO_TESTS else code


def main(args: list[str]) -> int:
    workers = os.environ.get("TURBO_TEST_WORKERS", "4")
    parallel = run(f"parallel part ({workers} workers)",
                   ["-n", workers, "--dist", "loadfile", "-m", "not serial", *args])
    serial = run("serial part", ["-p", "no:xdist", "-m", "serial", *args])
    return parallel or serial


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
