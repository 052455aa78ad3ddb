"""``turbo``: submit and follow SQL queries, agent runs and workflows from a shell.

Every call blocks the person or coding agent that makes it, so the common
commands (``submit query|agent``, ``status``, ``result``, ``ls``) import only
the standard library: they write Celery messages and read results with the raw
Redis client in :mod:`celeryapp.shell.resp`. ``cancel`` (Celery's revoke
broadcast) and ``submit flow`` (the workflow validator) import more, on demand.

Exit codes: 0 ok, 1 the task failed / was cancelled / is not finished / not
found, 2 usage error or bad input, 3 Redis unreachable or refused the credentials.
"""
from __future__ import annotations

import os
import sys

from . import resp
from .args import parse_args
from .common import EXIT_FAILED, EXIT_OK, EXIT_REDIS, EXIT_USAGE, Failed, UsageError


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    try:
        return args.func(args)
    except UsageError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except Failed as exc:
        return _fail(str(exc), EXIT_FAILED)
    except resp.RedisConfigError as exc:
        return _fail(f"error: {exc}", EXIT_USAGE)
    except (resp.RedisUnavailable, resp.RedisAuthError) as exc:
        return _fail(str(exc), EXIT_REDIS)
    except resp.ReplyError as exc:
        return _fail(f"Redis error: {exc}", EXIT_REDIS)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        resp.close_all()


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    sys.stderr.write(f"turbo: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
