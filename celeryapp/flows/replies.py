"""What the workflow commands of ``flows.lua`` reply, by name instead of by position.

Redis hands back flat arrays (``{'applied', final, step, task id, ...}``); the store
(:mod:`.store`) turns each into one of these, so that callers read ``reply.ended`` and
``reply.claimed`` rather than ``reply[1]`` and ``reply[2:]``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from ..core.text import as_text


@dataclass(frozen=True, slots=True)
class Claimed:
    """A transition's outcome. ``applied`` is False for a stale event (nothing changed);
    ``ended`` is the workflow's final state when this very call ended it, else ""; and
    ``claimed`` the (step, task id) pairs it claimed as "dispatching": the caller
    publishes them, then marks them queued."""

    applied: bool
    ended: str = ""
    claimed: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.claimed]

    @classmethod
    def from_reply(cls, reply) -> Claimed:
        rest = [as_text(item) for item in reply[2:]]
        return cls(applied=as_text(reply[0]) == "applied", ended=as_text(reply[1]),
                   claimed=tuple(zip(rest[::2], rest[1::2], strict=True)))


@dataclass(frozen=True, slots=True)
class Conflict:
    """A success whose added steps were refused: these names exist in the workflow
    already. Nothing changed (the step is still in flight)."""

    names: tuple[str, ...]

    @classmethod
    def from_reply(cls, reply) -> Conflict:
        return cls(tuple(as_text(name) for name in reply[1:]))


class Start(enum.Enum):
    """The start transition's outcome (``store.started``)."""

    STARTED = "started"  # this message runs the attempt
    STALE = "stale"  # not in flight under this task id: nothing changed
    ENDED = "ended"  # the task's final state is stored: not started
    CANCELLED = "cancelled"  # cancelled with its workflow: not to run
    COPY = "copy"  # another message started this attempt: ``StartReply.tag`` names it


@dataclass(frozen=True, slots=True)
class StartReply:
    outcome: Start
    tag: str = ""  # COPY: the delivery tag of the message that started the attempt

    @classmethod
    def from_reply(cls, reply) -> StartReply:
        return cls(Start(as_text(reply[0])), as_text(reply[1]))


@dataclass(frozen=True, slots=True)
class Cancelled:
    """``applied`` False when the workflow had ended already (nothing changed);
    ``task_ids`` the tasks of the steps that were in flight: to revoke."""

    applied: bool
    task_ids: tuple[str, ...] = ()

    @classmethod
    def from_reply(cls, reply) -> Cancelled:
        return cls(as_text(reply[0]) == "cancelled", tuple(as_text(t) for t in reply[1:]))
