"""``turbo``'s command line: one table, two parsers.

One table drives two parsers: a small one for the hot path (argparse and the
shutil/locale modules it loads cost more than a submit) and argparse, built
from the same table, for --help and for every error message. Anything the
small parser is unsure about (help, abbreviations, a bad value) goes to argparse.
"""
from __future__ import annotations

from ..core import names as C
from .common import UsageError
from .reading import cmd_cancel, cmd_ls, cmd_result, cmd_status
from .submitting import cmd_submit_agent, cmd_submit_flow, cmd_submit_query

PRIORITY_HELP = "critical|high|normal|low (or 0-9, 0 first)"



def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"expected a number, got {text!r}") from None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() \
        else value


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
        Opt("--timeout", "number", f"seconds the whole call may take, retries included "
                                   f"(default {timeout_env})", "S"),
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
                Opt("--queue", help=f"queue (default {C.QUERY_QUEUE}; {C.WAREHOUSE_QUEUE} for "
                                    f"a remote engine such as databricks)"),
                Opt("--host", help="run on this worker host (its queue host.HOST, or "
                                   "host.HOST.io for a remote engine)"),
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
                Opt("--permission-mode", metavar="MODE",
                    help="claude: acceptEdits, auto, default, dontAsk, plan (the worker's "
                         "TURBO_AGENT_PERMISSION_MODES decides which it allows); codex: "
                         "read-only, workspace-write; gemini: default, auto_edit"),
                Opt("--append-system-prompt", metavar="TEXT"),
                Opt("--resume", metavar="SESSION_ID",
                    help="continue a kept session (one run with --keep-session; send it to "
                         "the same --host)"),
                Opt("--keep-session", "flag", "keep the CLI's session so it can be resumed",
                    default=False),
                Opt("--keep-workdir", "flag", "keep the run's scratch directory afterwards",
                    default=False),
                *_common_options("TURBO_AGENT_TIMEOUT"),
                Opt("--queue", help=f"queue (default {C.AGENT_QUEUE})"),
                Opt("--host", help="run on this worker host (its io worker's queue "
                                   "host.HOST.io)"),
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
