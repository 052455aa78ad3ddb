"""Record what the real ``claude`` prints (stream-json) against the API stand-in, for the
unit tests of the parser (tests/unit/test_agent_outcomes.py): one file per mode,
``recorded/claude-<version>/<mode>.json`` = {"argv", "exit_code", "stdout", "stderr",
"api_calls"}. Run by hand after a pin change: ``python -m support.record_claude``
(from tests/); the live tests (test_real_claude*.py) check the same against the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from celeryapp.dev.localredis import free_port
from support.agent_clis import PINS, claude_env, cli_path
from support.fakes.anthropic_api import start_anthropic_api

HERE = Path(__file__).parent / "recorded"
MODES = {  # name: (directive, extra argv)
    "ok": ("[api:mode=ok]", []),
    "tools": ("[api:mode=tools]", []),
    "max-turns": ("[api:mode=tools]", ["--max-turns", "1"]),
    "429": ("[api:mode=429]", []),
    "529": ("[api:mode=529]", []),
    "401": ("[api:mode=401]", []),
    "403": ("[api:mode=403]", []),
    "500": ("[api:mode=500]", []),
    "unreachable": ("", []),
}


def main() -> int:
    exe = str(cli_path("claude"))
    out = HERE / f"claude-{PINS['claude'][1]}"
    out.mkdir(parents=True, exist_ok=True)
    with start_anthropic_api() as api:
        for name, (directive, extra) in MODES.items():
            home = tempfile.mkdtemp()
            url = f"http://127.0.0.1:{free_port()}" if name == "unreachable" else api.url
            env = claude_env(url, home, max_retries=1)
            argv = ["-p", "--output-format", "stream-json", "--verbose",
                    "--no-session-persistence", *extra]
            key = f"record-{name}"
            prompt = f"hello {directive[:-1]} key={key}]" if directive else "hello"
            done = subprocess.run([exe, *argv], input=prompt, capture_output=True, text=True,
                                  env=env, cwd=home, timeout=300)
            record = {"argv": argv, "prompt": prompt, "exit_code": done.returncode,
                      "stdout": done.stdout, "stderr": done.stderr,
                      "api_calls": api.count(key=key) if directive else 0}
            (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
            print(name, done.returncode, record["api_calls"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
