"""Mask secret-looking values in what monitoring shows: Flower, events, inspect replies.

Secrets never go into task arguments or results by design; this is defence in
depth for the day one does (a password in a SQL string, a token an agent echoes).
``redact(obj)`` masks values in nested dicts/lists/tuples and strings;
``redact_text(text)`` masks inside one string (a repr, a log line, a traceback).
What counts as a secret:

* a value whose key names one: ``password``, ``passwd``, ``secret``, ``token``,
  ``api_key``, ``access_key``, ``private_key``, ``authorization``, ``auth``,
  ``credentials``, ``cookie`` (``DATABRICKS_TOKEN``, ``apiKey``, ``x-api-key`` too);
  in text also ``key=value``, ``key: value``, ``'key': 'value'`` and ``--key value``;
* a password in a URL (``redis://:pw@host``, ``https://user:pw@host``) and a
  token-like user name (``https://<token>@github.com``);
* ``Bearer ...`` / ``Basic ...`` credentials;
* known token formats: Databricks ``dapi...``, Anthropic ``sk-ant-...``, OpenAI
  ``sk-...``, AWS access key ids ``AKIA...``, GitHub ``ghp_...``/``github_pat_...``,
  Slack ``xox?-...``, Google ``AIza...``, JWTs, PEM private keys.

Standard library only. The Celery hooks that apply it where Flower gets its data
are in :mod:`celeryapp.overrides.redaction`.
"""
from __future__ import annotations

import re
from typing import Any

MASK = "***"

# --- names ------------------------------------------------------------------------
# Substring anywhere in the (lower-cased) name: PGPASSWORD, db_password, client_secret.
_STRONG_NAME = re.compile(r"pass(?:word|wd|phrase)|secret", re.I)
# Whole components of a name (split on non-alphanumerics and camelCase):
# access_token, apiKey, x-api-key, DATABRICKS_TOKEN, Authorization - but not max_tokens.
_WEAK_COMPONENTS = {"token", "pwd", "auth", "authorization", "credential", "credentials",
                    "cookie", "apikey", "bearer"}
_WEAK_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("session", "key"),
               ("secret", "key"), ("auth", "token"), ("access", "token")}
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def is_secret_name(name: Any) -> bool:
    """True for a key or variable name that says its value is a secret."""
    if not isinstance(name, str) or not name:
        return False
    if _STRONG_NAME.search(name):
        return True
    parts = [p for p in re.split(r"[^a-z0-9]+", _CAMEL.sub(r"\1_\2", name).lower()) if p]
    if any(part in _WEAK_COMPONENTS for part in parts):
        return True
    return any(pair in _WEAK_PAIRS for pair in zip(parts, parts[1:], strict=False))


# --- text patterns -----------------------------------------------------------------
# scheme://user:password@host  ->  scheme://user:***@host
_SCHEME = r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]{0,30}://)"
_URL_PASSWORD = re.compile(_SCHEME + r"([^\s/:@'\"]{0,256}):([^\s/@'\"]{1,256})@")
# scheme://<long token>@host (GitHub and others accept a token as the user name)
_URL_TOKEN_USER = re.compile(_SCHEME + r"([A-Za-z0-9_\-.~]{16,256})@")
_AUTH_SCHEME = re.compile(r"(?i)\b(Bearer|Basic|Token)(\s+)([A-Za-z0-9\-._~+/]{6,}=*)")
_PEM = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|$)",
                  re.S)
# name=value, name: value, 'name': 'value', "name" = "value"; the name is checked
# with is_secret_name in the replacement function.
_ASSIGNMENT = re.compile(
    r"""(?<![A-Za-z0-9_.\-])(?P<name>[A-Za-z_][A-Za-z0-9_.\-]{0,80})(?P<q1>['"]?)"""
    r"""(?P<sep>[ \t]*[:=][ \t]*)"""
    # a value quoted inside a SQL string, its quotes doubled: 'password=''hunter2'''
    r"""(?:''(?P<sqlquoted>[^'\n]+)''"""
    r"""|(?P<q2>['"])(?P<quoted>(?:\\[^\n]|(?!(?P=q2))[^\\\n])*)(?P=q2)"""
    # a quoted value inside a repr that escaped its quotes: password=\'hunter2\'
    r"""|\\(?P<q3>['"])(?P<escquoted>(?:(?!\\(?P=q3))[^\n])*)\\(?P=q3)"""
    r"""|(?P<scheme>(?:Bearer|Basic|Token)[ \t]+)?(?P<bare>(?:[^\s'",;&)}\]\\]|\\(?!['"]))+))""")
# --password hunter2 / --token=... (the = form is caught by _ASSIGNMENT)
_FLAG = re.compile(r"(?<![\w-])(?P<flag>--?[A-Za-z][A-Za-z0-9_\-]{0,60})(?P<sp>[ \t]+)"
                   r"(?P<value>[^\s'\"-][^\s'\"]*)")
_TOKENS = [
    (re.compile(r"\bdapi[0-9a-f]{16,}(?:-\d+)?\b"), "dapi" + MASK),           # Databricks
    (re.compile(r"\bdose[0-9a-f]{16,}\b"), "dose" + MASK),                      # Databricks OAuth
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"), "sk-ant-" + MASK),             # Anthropic
    (re.compile(r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{16,}"), "sk-" + MASK),  # OpenAI & co
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[0-9A-Z]{16}\b"), "AKIA" + MASK),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"), "gh_" + MASK),              # GitHub
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"), "github_pat_" + MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_\-]{16,}"), "glpat-" + MASK),              # GitLab
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), "xox-" + MASK),           # Slack
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + MASK),                  # Google
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), "jwt:" + MASK),
]


def _assignment(match: re.Match) -> str:
    if not is_secret_name(match.group("name")):
        return match.group(0)
    head = match.group("name") + match.group("q1") + match.group("sep")
    if match.group("sqlquoted") is not None:
        return f"{head}''{MASK}''"
    if match.group("q2") is not None:
        quote = match.group("q2")
        return f"{head}{quote}{MASK if match.group('quoted') else ''}{quote}"
    if match.group("q3") is not None:
        quote = "\\" + match.group("q3")
        return f"{head}{quote}{MASK if match.group('escquoted') else ''}{quote}"
    return f"{head}{match.group('scheme') or ''}{MASK}"


def _assignments(text: str) -> str:
    """``_ASSIGNMENT.sub(_assignment, text)``, except that a name that is no secret
    gives its value back to the scan: in ``Error: password = 'x'`` the value of
    ``Error`` would otherwise swallow the name ``password``."""
    out, pos, done = [], 0, 0
    while True:
        match = _ASSIGNMENT.search(text, pos)
        if match is None:
            break
        if is_secret_name(match.group("name")):
            out.append(text[done:match.start()])
            out.append(_assignment(match))
            pos = done = match.end()
        elif match.group("bare") and _NEXT_SEP.match(text, match.end()):
            pos = match.end("sep")  # the value is the next name: rescan from it
        else:
            pos = match.end()
    out.append(text[done:])
    return "".join(out)


_NEXT_SEP = re.compile(r"""['"]?[ \t]*[:=]""")


def _flag(match: re.Match) -> str:
    if not is_secret_name(match.group("flag").lstrip("-")):
        return match.group(0)
    return f"{match.group('flag')}{match.group('sp')}{MASK}"


# Every pattern above needs one of these (in lower case); most texts (plain SQL,
# prompts) have none, and one search of the lowered text is cheap (~2 us).
_MAYBE = re.compile("|".join(re.escape(word) for word in (
    "pass", "secret", "token", "key", "auth", "pwd", "cookie", "credential", "bearer", "basic",
    "://", "dapi", "dose", "sk-", "akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva",
    "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat", "glpat", "xox", "aiza", "eyj")))


def redact_text(text: str, limit: int | None = None) -> str:
    """``text`` with every secret-looking value replaced by ``***``.

    With ``limit``, a longer text is cut to ``limit`` characters first (plus "...").
    """
    if not isinstance(text, str) or not text:
        return text
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    if not _MAYBE.search(text.lower()):
        return text
    text = _PEM.sub(lambda m: f"-----BEGIN {m.group(1)}PRIVATE KEY-----{MASK}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{m.group(2)}:{MASK}@", text)
    text = _URL_TOKEN_USER.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _assignments(text)
    text = _FLAG.sub(_flag, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    for pattern, replacement in _TOKENS:
        text = pattern.sub(replacement, text)
    return text


def redact(obj: Any, limit: int | None = None) -> Any:
    """A copy of ``obj`` with secrets masked: dict values under secret-looking keys,
    and secret-looking text in every string (nested dicts, lists, tuples, sets).

    With ``limit`` the copy is for printing a repr cut at about that many
    characters: once ``limit`` characters of text were redacted, further strings
    become "..." (a repr that short never shows them), so a huge argument costs
    little.
    """
    return _redact(obj, [limit if limit is not None else -1], 0)


def _redact(obj: Any, budget: list[int], depth: int) -> Any:
    if depth > 50:
        return MASK
    if isinstance(obj, bytes):
        try:
            obj = obj.decode()
        except UnicodeDecodeError:
            return obj
    if isinstance(obj, str):
        if budget[0] < 0:
            return redact_text(obj)
        if budget[0] == 0:
            return "..."
        text = redact_text(obj, budget[0])
        budget[0] = max(0, budget[0] - len(obj))
        return text
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if is_secret_name(key) and value not in (None, "", True, False):
                out[key] = MASK
            else:
                out[key] = _redact(value, budget, depth + 1)
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_redact(item, budget, depth + 1) for item in obj]
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
            return type(obj)(*items)
        return type(obj)(items) if not isinstance(obj, list) else items
    return obj


# --- Flower ------------------------------------------------------------------------
TASK_TEXT_FIELDS = ("args", "kwargs", "result", "exception", "traceback")
TEXT_LIMIT = 16384  # longest text shown; Celery's reprs are ~1 KB, a traceback a few KB


def format_flower_task(task):
    """Flower's ``format_task`` hook: the task (a copy Flower made) with its texts redacted."""
    for field in TASK_TEXT_FIELDS:
        value = getattr(task, field, None)
        if isinstance(value, str):
            setattr(task, field, redact_text(value, TEXT_LIMIT))
    return task


def redact_event_fields(fields: dict) -> dict:
    """An event's fields with the task texts redacted (the dict is not changed)."""
    if not any(isinstance(fields.get(name), str) for name in TASK_TEXT_FIELDS):
        return fields
    out = dict(fields)
    for name in TASK_TEXT_FIELDS:
        if isinstance(out.get(name), str):
            out[name] = redact_text(out[name], TEXT_LIMIT)
    return out
