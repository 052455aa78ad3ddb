"""The worker's log is shown to others (journald, log shippers): secrets in it are masked.

Celery logs a failed task's exception text and traceback ("Task turbo.query[...]
raised unexpected: QueryError(\"... password = 'x' ...\")"), and a retried one's
reason; an engine or an agent may echo a secret back inside such a text. A filter on
every handler of the worker's loggers redacts each record's message and traceback
(:func:`celeryapp.core.redaction.redact_text`). The caller still gets the real
exception from the result backend.
"""
from __future__ import annotations

import logging

from celery import signals

from celeryapp.core.redaction import redact_text

_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler to report
            return True
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


FILTER = RedactingFilter()


def install(logger: logging.Logger | None = None) -> None:
    """The filter on every handler of ``logger`` (default: root) and its children's."""
    loggers = [logger or logging.getLogger()]
    if logger is None:
        loggers += [item for item in logging.Logger.manager.loggerDict.values()
                    if isinstance(item, logging.Logger)]
    for each in loggers:
        for handler in each.handlers:
            if FILTER not in handler.filters:
                handler.addFilter(FILTER)


@signals.after_setup_logger.connect
def _on_logger(logger=None, **_):
    install()


@signals.after_setup_task_logger.connect
def _on_task_logger(logger=None, **_):
    install(logger)
    install()
