#!/usr/bin/env python3
"""Probe the REAL ``claude`` CLI (pinned in support/agent_clis.py) against the Messages API
stand-in (support/fakes/anthropic_api.py), for every stand-in mode, and write what it
does to a Markdown report (default ``.probe/claude.md`` at the repo root; scratch, not
committed). The report is rewritten after every batch, so it is usable while later,
slower batches (claude's default retries take minutes) still run; the text of
``<out stem>.notes.md`` beside it (hand-written conclusions), if there, goes first.

    .venv/bin/python tests/support/probe_claude.py [--out PATH] [--quick] [--only NAME ...]

Batches: every mode with CLAUDE_CODE_MAX_RETRIES=1; the prompt on stdin; text output;
CLAUDE_CODE_MAX_RETRIES=0; ``--resume`` after a turn-limit stop (session files,
CLAUDE_CONFIG_DIR, another cwd); an unreachable API; and every mode with claude's default
retries (skipped by ``--quick``).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from support.agent_clis import PINS, cli_path, claude_env  # noqa: E402
from support.fakes.anthropic_api import start_anthropic_api  # noqa: E402

ROOT = TESTS.parent
BASE_ARGS = ["-p", "--output-format", "json", "--no-session-persistence"]
SHOW_KEYS = ("subtype", "is_error", "api_error_status", "num_turns", "stop_reason",
             "terminal_reason", "errors")


class Probe:
    def __init__(self, claude: Path, api, out: Path, workdir: Path):
        self.claude, self.api, self.out, self.workdir = claude, api, out, workdir
        self.rows: list[dict] = []
        self.sections: dict[str, str] = {}
        self.lock = threading.Lock()

    # -- running ------------------------------------------------------------------------
    def home(self, label: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"home-{label}-", dir=self.workdir))

    def run(self, label: str, directive: str | None, *, batch: str, args=(), retries="1",
            stdin=False, url=None, env_extra=None, home=None, cwd=None, base=None,
            prompt_text="hello", timeout=400) -> dict:
        key = f"{label}-{uuid.uuid4().hex[:6]}"
        prompt = prompt_text + (f" [api:{directive} key={key}]" if directive else "")
        home = Path(home) if home else self.home(label)
        env = claude_env(url or self.api.url, home,
                         max_retries=None if retries is None else int(retries))
        env.update(env_extra or {})
        argv = [str(self.claude), *(BASE_ARGS if base is None else base), *args]
        if not stdin:
            argv += ["--", prompt]
        started = time.monotonic()
        try:
            done = subprocess.run(argv, input=prompt if stdin else None, capture_output=True,
                                  text=True, env=env, cwd=str(cwd or home), timeout=timeout,
                                  stdin=None if stdin else subprocess.DEVNULL)
            code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = "timeout", exc.stdout or "", exc.stderr or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        elapsed = time.monotonic() - started
        try:
            parsed = json.loads(stdout)
        except ValueError:
            parsed = None
        calls = [c for c in self.api.calls if c.get("key") == key]
        row = {"batch": batch, "label": label, "directive": directive, "retries": retries,
               "input": "stdin" if stdin else "argv", "argv": argv[1:], "exit": code,
               "args": " ".join(([] if base is None else [f"base={' '.join(base)}"]) + list(args)),
               "elapsed": round(elapsed, 2), "api_calls": len(calls),
               "call_times": [round(c["time"] - calls[0]["time"], 2) for c in calls],
               "statuses": [c["status"] for c in calls], "json": parsed, "stdout": stdout,
               "stderr": stderr, "env_extra": env_extra or {}, "home": str(home), "key": key}
        with self.lock:
            self.rows.append(row)
        print(f"[{batch}] {label}: exit {code} in {elapsed:.1f}s, {len(calls)} call(s)",
              flush=True)
        return row

    def parallel(self, jobs: list[tuple[tuple, dict]]) -> list[dict]:
        with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
            futures = [pool.submit(self.run, *a, **k) for a, k in jobs]
            return [f.result() for f in futures]

    # -- the report -------------------------------------------------------------------------
    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            "# The real claude CLI against the Messages API stand-in",
            "",
            f"claude {PINS['claude'][1]} ({self.claude}); written by "
            f"`tests/support/probe_claude.py` at {time.strftime('%Y-%m-%d %H:%M:%S')}.",
            "Each run: a fresh HOME, cwd = HOME, env from `support.agent_clis.claude_env` "
            f"(`{' '.join(f'{k}={v}' for k, v in sorted(claude_env('URL', 'HOME').items()) if k not in ('PATH',))}`)",
            f"plus the variables in the table; argv `claude {' '.join(BASE_ARGS)} [args] -- PROMPT`"
            " unless said otherwise. `calls` = POST /v1/messages the stand-in counted for that"
            " run (`statuses` their HTTP status, `t` their start offsets in s).",
            "",
        ]
        notes = self.out.with_name(self.out.stem + ".notes.md")  # hand-written conclusions
        if notes.exists():
            lines += [notes.read_text().rstrip(), ""]
        for name, text in self.sections.items():
            lines += [f"## {name}", "", text.rstrip(), ""]
        lines += ["## Table", ""]
        lines += ["| batch | case | MAX_RETRIES | input | args | exit | elapsed s | calls | statuses / t |"
                  " subtype | is_error | api_error_status | num_turns | stop_reason |"
                  " terminal_reason | errors | result (start) | stderr |",
                  "|" + "---|" * 18]
        for r in sorted(self.rows, key=lambda r: (r["batch"], r["label"])):
            j = r["json"] if isinstance(r["json"], dict) else {}
            result = j.get("result", "(no result key)" if j else r["stdout"][:80])
            args = r["args"]
            extra = " ".join(f"{k}={v}" for k, v in r["env_extra"].items())
            lines.append("| " + " | ".join(_cell(v) for v in (
                r["batch"], r["label"] + (f" ({extra})" if extra else ""),
                "unset" if r["retries"] is None else r["retries"], r["input"], args, r["exit"],
                r["elapsed"], r["api_calls"], f"{r['statuses']} t={r['call_times']}",
                *(j.get(k, "—") for k in SHOW_KEYS), str(result)[:90],
                r["stderr"].strip()[-120:] or "(empty)")) + " |")
        lines += ["", "## Key sets", ""]
        seen: dict = {}
        for r in self.rows:
            if isinstance(r["json"], dict):
                seen.setdefault(tuple(r["json"]), []).append(r["label"])
        for keys, labels in seen.items():
            lines += [f"* {sorted(set(labels))}: `{list(keys)}`"]
        lines += ["", "## Raw output (verbatim)", ""]
        for r in sorted(self.rows, key=lambda r: (r["batch"], r["label"])):
            lines += [f"### {r['batch']} / {r['label']} (MAX_RETRIES={r['retries']}, "
                      f"{r['input']}, exit {r['exit']}, {r['elapsed']} s, "
                      f"{r['api_calls']} calls)", "",
                      f"argv: `{json.dumps(r['argv'])}`",
                      "" if not r["env_extra"] else f"env: `{r['env_extra']}`", "",
                      "stdout:", "", "```", r["stdout"].rstrip("\n"), "```", "",
                      "stderr:" + (" (empty)" if not r["stderr"] else ""), ""]
            if r["stderr"]:
                lines += ["```", r["stderr"].rstrip("\n")[-3000:], "```", ""]
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.out)
        self.out.with_suffix(".rows.json").write_text(json.dumps(
            {"rows": self.rows, "sections": self.sections}))

    def merge_previous(self, batches_to_redo: set) -> None:
        """Keep the rows of an earlier run's other batches (``--only`` redoes some)."""
        saved = self.out.with_suffix(".rows.json")
        if not saved.exists():
            return
        old = json.loads(saved.read_text())
        self.rows = [r for r in old["rows"] if r["batch"].split(" ")[0] not in batches_to_redo]
        self.sections = old["sections"]


def _cell(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.replace("|", "\\|").replace("\n", " ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MODES_1 = [  # (label, directive, args)
    ("ok", "mode=ok", []),
    ("tools", "mode=tools", []),
    ("max-turns", "mode=tools", ["--max-turns", "1"]),
    ("429", "mode=429", []),
    ("529", "mode=529", []),
    ("401", "mode=401", []),
    ("403", "mode=403", []),
    ("500", "mode=500", []),
    ("429-until-1", "mode=429 until=1", []),
    ("429-until-2", "mode=429 until=2", []),
    ("slow-3s", "mode=slow secs=3", []),
]


def batch_first(p: Probe) -> None:
    p.parallel([((label, d), {"batch": "1 retries=1", "args": a}) for label, d, a in MODES_1]
               + [(("slow-timeout", "mode=slow secs=20"),
                   {"batch": "1 retries=1", "env_extra": {"API_TIMEOUT_MS": "3000"}})])


def batch_stdin_text(p: Probe) -> None:
    text = ["-p", "--output-format", "text", "--no-session-persistence"]
    p.parallel([(("ok", "mode=ok"), {"batch": "2 stdin", "stdin": True}),
                (("429", "mode=429"), {"batch": "2 stdin", "stdin": True}),
                (("max-turns", "mode=tools"), {"batch": "2 stdin", "stdin": True,
                                               "args": ["--max-turns", "1"]}),
                (("ok", "mode=ok"), {"batch": "3 text", "base": text}),
                (("429", "mode=429"), {"batch": "3 text", "base": text}),
                (("max-turns", "mode=tools"), {"batch": "3 text", "base": text,
                                               "args": ["--max-turns", "1"]}),
                (("401", "mode=401"), {"batch": "3 text", "base": text})])


def batch_zero(p: Probe) -> None:
    p.parallel([((label, d), {"batch": "4 retries=0", "retries": "0"})
                for label, d in (("ok", "mode=ok"), ("429", "mode=429"), ("529", "mode=529"),
                                 ("500", "mode=500"), ("401", "mode=401"))])


def batch_unreachable(p: Probe, default_retries: bool) -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    jobs = [(("unreachable", "mode=ok"), {"batch": "5 unreachable", "retries": "1", "url": url}),
            (("unreachable", "mode=ok"), {"batch": "5 unreachable", "retries": "0", "url": url})]
    if default_retries:
        jobs.append((("unreachable", "mode=ok"),
                     {"batch": "5 unreachable", "retries": None, "url": url}))
    p.parallel(jobs)


def batch_default(p: Probe) -> None:
    jobs = [((label, d), {"batch": "7 retries=default", "retries": None, "args": a})
            for label, d, a in MODES_1 if not label.startswith("slow")]
    p.parallel(jobs)


def batch_extra(p: Probe) -> None:
    """529 past claude's own 529 limit, --fallback-model, --max-budget-usd, odd answers."""
    b = "8 extra"
    p.parallel([
        (("529", "mode=529"), {"batch": b, "retries": "2"}),
        (("529", "mode=529"), {"batch": b, "retries": "3"}),
        (("529", "mode=529"), {"batch": b, "retries": "5"}),
        (("529-opus-only+fallback", "mode=529 model=opus"),
         {"batch": b, "retries": "5", "args": ["--fallback-model", "claude-sonnet-4-5"]}),
        (("529-opus-only+fallback", "mode=529 model=opus"),
         {"batch": b, "retries": "1", "args": ["--fallback-model", "claude-sonnet-4-5"]}),
        (("ok+budget", "mode=ok"), {"batch": b, "args": ["--max-budget-usd", "0.01"]}),
        (("tools+budget", "mode=tools"), {"batch": b, "args": ["--max-budget-usd", "0.01"]}),
        (("empty", "mode=empty"), {"batch": b}),
        (("truncated", "mode=truncated"), {"batch": b}),
        (("stop=max_tokens", "mode=ok stop=max_tokens"), {"batch": b}),
        (("stop=refusal", "mode=ok stop=refusal"), {"batch": b}),
        (("model-sonnet", "mode=ok"), {"batch": b, "args": ["--model", "sonnet"]}),
        (("verbose-json", "mode=ok"), {"batch": b, "args": ["--verbose"]}),
    ])


def tree(root: Path) -> str:
    found = sorted(str(path.relative_to(root)) + ("/" if path.is_dir() else
                   f"  ({path.stat().st_size} B)") for path in root.rglob("*"))
    return "\n".join(found) or "(empty)"


def batch_resume(p: Probe) -> None:
    notes = []
    persist = ["-p", "--output-format", "json"]

    def summary(row):
        j = row["json"] or {}
        calls = [c for c in p.api.calls if c.get("key") == row["key"]]
        return (f"exit {row['exit']}, subtype {j.get('subtype')}, is_error {j.get('is_error')}, "
                f"session_id {j.get('session_id')}, num_turns {j.get('num_turns')}, "
                f"result {str(j.get('result', '(none)'))[:100]!r}, errors {j.get('errors')}, "
                f"{len(calls)} API call(s) with message counts "
                f"{[c.get('messages') for c in calls]}; stdout {row['stdout'][:300]!r}; "
                f"stderr {row['stderr'].strip()[-300:]!r}")

    # R1: the turn-limit stop with --no-session-persistence, then --resume
    home = p.home("r1")
    first = p.run("r1-stop", "mode=tools", batch="6 resume", args=["--max-turns", "1"],
                  home=home)
    sid = (first["json"] or {}).get("session_id")
    notes.append(f"**R1** `--no-session-persistence --max-turns 1` turn-limit stop: "
                 f"{summary(first)}.\n\nFiles under HOME afterwards:\n```\n{tree(home)}\n```")
    again = p.run("r1-resume", "mode=ok", batch="6 resume", base=persist,
                  args=["--resume", sid], home=home, prompt_text="go on")
    notes.append(f"**R1b** `--resume {sid}` (no --no-session-persistence) after it: "
                 f"{summary(again)}")
    again = p.run("r1-resume-nsp", "mode=ok", batch="6 resume",
                  args=["--resume", sid], home=home, prompt_text="go on")
    notes.append(f"**R1c** `--no-session-persistence --resume {sid}`: {summary(again)}")

    # R2: persisted session; where the file is; resume from the same and another cwd
    home = p.home("r2")
    cwd_a, cwd_b = home / "work" / "proj.a", home / "elsewhere"
    cwd_a.mkdir(parents=True), cwd_b.mkdir(parents=True)
    first = p.run("r2-stop", "mode=tools", batch="6 resume", base=persist,
                  args=["--max-turns", "1"], home=home, cwd=cwd_a)
    sid = (first["json"] or {}).get("session_id")
    notes.append(f"**R2** persisted turn-limit stop in cwd `{cwd_a}`: {summary(first)}.\n\n"
                 f"Files under HOME afterwards:\n```\n{tree(home)}\n```")
    same = p.run("r2-resume-same-cwd", "mode=ok", batch="6 resume", base=persist,
                 args=["--resume", sid], home=home, cwd=cwd_a, prompt_text="go on")
    notes.append(f"**R2b** `--resume {sid}` from the same cwd: {summary(same)}.\n\n"
                 f"Files under HOME afterwards:\n```\n{tree(home)}\n```")
    other = p.run("r2-resume-other-cwd", "mode=ok", batch="6 resume", base=persist,
                  args=["--resume", sid], home=home, cwd=cwd_b, prompt_text="go on")
    notes.append(f"**R2c** `--resume {sid}` from ANOTHER cwd `{cwd_b}`: {summary(other)}")
    fork = p.run("r2-resume-fork", "mode=ok", batch="6 resume", base=persist,
                 args=["--resume", sid, "--fork-session"], home=home, cwd=cwd_a,
                 prompt_text="go on")
    notes.append(f"**R2d** `--resume {sid} --fork-session`: {summary(fork)}")
    cont = p.run("r2-continue", "mode=ok", batch="6 resume", base=persist,
                 args=["--continue"], home=home, cwd=cwd_a, prompt_text="go on")
    notes.append(f"**R2e** `--continue` in the same cwd: {summary(cont)}")
    missing = str(uuid.uuid4())
    gone = p.run("r2-resume-unknown", "mode=ok", batch="6 resume", base=persist,
                 args=["--resume", missing], home=home, cwd=cwd_a, prompt_text="go on")
    notes.append(f"**R2f** `--resume <unknown uuid>`: {summary(gone)}")
    bad = p.run("r2-resume-not-uuid", "mode=ok", batch="6 resume", base=persist,
                args=["--resume", "not-a-uuid"], home=home, cwd=cwd_a, prompt_text="go on")
    notes.append(f"**R2g** `--resume not-a-uuid`: {summary(bad)}")

    # R3: CLAUDE_CONFIG_DIR moves the session files?
    home = p.home("r3")
    config = home / "cfg"
    first = p.run("r3-config-dir", "mode=tools", batch="6 resume", base=persist,
                  args=["--max-turns", "1"], home=home,
                  env_extra={"CLAUDE_CONFIG_DIR": str(config)})
    sid = (first["json"] or {}).get("session_id")
    notes.append(f"**R3** `CLAUDE_CONFIG_DIR={config}` persisted run: {summary(first)}.\n\n"
                 f"Files under HOME (config dir inside it) afterwards:\n```\n{tree(home)}\n```")
    back = p.run("r3-resume-same-config", "mode=ok", batch="6 resume", base=persist,
                 args=["--resume", sid], home=home, prompt_text="go on",
                 env_extra={"CLAUDE_CONFIG_DIR": str(config)})
    notes.append(f"**R3b** `--resume` with the same CLAUDE_CONFIG_DIR: {summary(back)}")
    home2 = p.home("r3other")
    lost = p.run("r3-resume-no-config", "mode=ok", batch="6 resume", base=persist,
                 args=["--resume", sid], home=home2, prompt_text="go on")
    notes.append(f"**R3c** `--resume` with another HOME and no CLAUDE_CONFIG_DIR: "
                 f"{summary(lost)}")

    # R4: --session-id
    home = p.home("r4")
    chosen = str(uuid.uuid4())
    given = p.run("r4-session-id", "mode=ok", batch="6 resume", base=persist,
                  args=["--session-id", chosen], home=home)
    notes.append(f"**R4** `--session-id {chosen}`: {summary(given)}.\n\nFiles:\n```\n"
                 f"{tree(home)}\n```")
    given = p.run("r4-session-id-nsp", "mode=ok", batch="6 resume",
                  args=["--session-id", str(uuid.uuid4())], home=home)
    notes.append(f"**R4b** `--no-session-persistence --session-id <uuid>`: {summary(given)}")
    again = p.run("r4-session-id-reuse", "mode=ok", batch="6 resume", base=persist,
                  args=["--session-id", chosen], home=home)
    notes.append(f"**R4c** `--session-id` of an existing session again: {summary(again)}")
    p.sections["Resume findings (raw)"] = "\n\n".join(notes)


def batch_request(p: Probe) -> None:
    """What one request looks like (headers, body keys) and what else claude calls."""
    calls = [c for c in p.api.calls if c.get("path") == "/v1/messages" and c.get("body")]
    other = sorted({(c.get("method", "POST"), c["path"], c["status"]) for c in p.api.calls
                    if c["path"] != "/v1/messages"})
    if not calls:
        return
    body = calls[0]["body"]
    summary = {k: (v if k in ("model", "max_tokens", "stream", "metadata", "thinking",
                              "temperature", "context_management", "output_config")
                   else f"<{type(v).__name__} len {len(v) if hasattr(v, '__len__') else ''}>")
               for k, v in body.items()}
    tools = [t.get("name") for t in body.get("tools") or []]
    models = sorted({c.get("model") for c in calls})
    p.sections["Requests claude sends"] = (
        f"Other paths seen (method, path, status): {other}\n\nModels requested: {models}\n\n"
        f"First request's headers:\n```\n{json.dumps(calls[0]['headers'], indent=1)}\n```\n\n"
        f"First request's body (summary):\n```\n{json.dumps(summary, indent=1)}\n```\n\n"
        f"Tools offered ({len(tools)}): {tools}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / ".probe" / "claude.md"))
    parser.add_argument("--quick", action="store_true", help="skip the default-retries batch")
    parser.add_argument("--only", nargs="*", help="batches: first stdin zero unreachable "
                        "resume extra default (the report keeps the other batches' rows)")
    args = parser.parse_args(argv)
    claude = cli_path("claude")
    out = Path(args.out)
    only = set(args.only or ["first", "stdin", "zero", "unreachable", "resume", "extra",
                             "default"])
    if args.quick:
        only.discard("default")
    workdir = Path(tempfile.mkdtemp(prefix="probe-claude-"))
    with start_anthropic_api(keep_bodies=True, retry_after=1) as api:
        p = Probe(claude, api, out, workdir)
        steps = [("first", batch_first), ("stdin", batch_stdin_text), ("zero", batch_zero),
                 ("unreachable", lambda p: batch_unreachable(p, "default" in only)),
                 ("resume", batch_resume), ("extra", batch_extra), ("default", batch_default)]
        numbers = {"first": "1", "stdin": "2", "zero": "4", "unreachable": "5", "resume": "6",
                   "extra": "8", "default": "7"}
        if args.only:
            p.merge_previous({numbers[n] for n in only} | ({"3"} if "stdin" in only else set()))
        for name, step in steps:
            if name in only:
                step(p)
                batch_request(p)
                p.write()
                print(f"wrote {out} after batch {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
