"""`python -m bench`: run every benchmark against this project and plain Celery."""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from celeryapp.localredis import LocalRedis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("var/bench/results.json"))
    parser.add_argument("-n", type=int, default=3000, help="delay() calls per side")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turbo-bench-") as tmp:
        redis = LocalRedis(workdir=Path(tmp) / "redis", password="bench").start()
        try:
            from . import delay_latency

            figures = {"delay_latency": delay_latency.run(f"{redis.url}/0", args.n)}
        finally:
            redis.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"figures written to {args.out}")


if __name__ == "__main__":
    main()
