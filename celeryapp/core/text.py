"""Redis replies as text: redis-py and the shell's client hand back ``bytes``."""
from __future__ import annotations


def as_text(value: bytes | str | None) -> str:
    """``value`` as a ``str``: bytes decoded as UTF-8, ``None`` as ``""``."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
