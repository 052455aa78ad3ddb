"""Execute one statement on an engine with a deadline; no Celery here."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .deadline import run_with_deadline
from .engines import Engine
from .engines.base import Params
from .errors import InvalidRequest, TurboError
from .results import collect

log = logging.getLogger(__name__)


def check_params(params: Any) -> Params:
    if params is None or isinstance(params, (list, tuple, dict)):
        return params
    raise InvalidRequest(
        f"params must be a list (positional ?) or a dict (named $name / :name), "
        f"not {type(params).__name__}")


def execute(engine: Engine, sql: str, params: Params, *, timeout: float,
            max_inline_rows: int, preview_rows: int, spill_path: Path,
            on_start=None) -> dict[str, Any]:
    """Run ``sql``; return the result dict of the public contract (minus task fields)."""
    if not isinstance(sql, str) or not sql.strip():
        raise InvalidRequest("sql must be a non-empty string")
    params = check_params(params)
    started = time.monotonic()
    session = engine.open()
    try:
        if on_start:
            on_start(session)

        def work() -> dict[str, Any]:
            try:
                schema, batches = session.execute(sql, params)
                return collect(schema, batches, max_inline_rows=max_inline_rows,
                               preview_rows=preview_rows, spill_path=spill_path)
            except TurboError:
                raise
            except Exception as exc:
                raise engine.classify(exc) from exc

        result = run_with_deadline(work, session.cancel, timeout, what=f"{engine.name} query")
    except BaseException:
        _close_quietly(session)  # keep the original error, not a close() failure
        raise
    session.close()
    result["engine"] = engine.name
    result["elapsed_s"] = round(time.monotonic() - started, 4)
    return result


def _close_quietly(session) -> None:
    try:
        session.close()
    except Exception:
        log.warning("closing the %s session after an error failed", type(session).__name__,
                    exc_info=True)
