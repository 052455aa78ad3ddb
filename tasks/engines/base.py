"""What an SQL engine provides to the query runner."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator, Mapping, Sequence

import pyarrow as pa

Params = Mapping[str, Any] | Sequence[Any] | None


class Session(ABC):
    """One open connection running one statement at a time."""

    @abstractmethod
    def execute(self, sql: str, params: Params) -> tuple[pa.Schema | None, Iterator[pa.RecordBatch]]:
        """Run ``sql`` with bound ``params``; return the schema and a stream of batches.

        A statement without a result set returns ``(None, iter(()))``.
        """

    @abstractmethod
    def cancel(self) -> None:
        """Stop the running statement at the engine; safe to call from another thread."""

    @abstractmethod
    def close(self) -> None:
        ...

    @property
    def statement_id(self) -> str | None:
        """The engine's id for the running statement, when it has one."""
        return None


class Engine(ABC):
    name: str

    @abstractmethod
    def open(self) -> Session:
        """Connect; errors come out already classified (see :meth:`classify`)."""

    @abstractmethod
    def classify(self, exc: BaseException) -> Exception:
        """Map an engine exception to a Permanent or Transient Turbo error."""
