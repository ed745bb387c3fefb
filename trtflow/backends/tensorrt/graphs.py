"""Captured CUDA graphs of one execution context, keyed by optimization profile and input shapes.

A graph replays the addresses it was captured with. Each (profile, shapes) key keeps one graph
together with those addresses; when a buffer behind the key was replaced (grown, re-staged) the
old graph is evicted and captured again, so no graph outlives the memory it writes to. A key
whose capture failed holds ``None``: that shape set runs by plain enqueue from then on.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_GRAPHS = 32  # (profile, shapes) keys kept per execution context; the least recently used goes first

MISSING = object()  # lookup's answer when no graph is kept for a key


class GraphCache:
    """Graphs by ``(profile, shapes)``, each valid only for the buffer addresses it was captured with.

    Attributes:
        evictions: graphs dropped because their addresses changed or the cache was full.
    """

    def __init__(self, limit: int = MAX_GRAPHS):
        self._limit = limit
        self._entries: OrderedDict[tuple, tuple[tuple[int, ...], Any]] = OrderedDict()
        self.evictions = 0

    def lookup(self, key: tuple, addresses: tuple[int, ...]) -> Any:
        """The graph (or ``None`` for a failed capture) for ``key`` at these addresses; ``MISSING``
        when there is none, after evicting a graph captured at other addresses."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[0] != addresses:
            del self._entries[key]
            self.evictions += 1
            return MISSING
        self._entries.move_to_end(key)
        return entry[1]

    def store(self, key: tuple, addresses: tuple[int, ...], graph: Any) -> None:
        self._entries[key] = (addresses, graph)
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
            self.evictions += 1

    def addresses(self) -> list[tuple[int, ...]]:
        """The addresses of every kept graph (tests check none points at freed memory)."""
        return [a for a, g in self._entries.values() if g is not None]

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

