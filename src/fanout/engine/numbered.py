"""`Numbered`: a run's tasks (or results) by number, in memory for the live ones only.

A run numbers its tasks 0, 1, 2, ... and finds each by its number; a streamed batch lets
finished ones go (`Run.forget` empties their slot). A plain list keeps a slot (8 bytes) for
every task ever added, which is 8 MB per million tasks for each of `Run.tasks` and
`Run.results_by_n`: the part of a million-line batch's memory that still grew with the
file. `Numbered` drops the empty slots at its front once there are enough of them, so it
holds about the span from the oldest live task to the newest.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, repeat
from typing import TypeVar, overload

T = TypeVar("T")

#: empty slots at the front are dropped once there are this many, and at least as many as
#: the slots kept (so the cost of moving the rest down is paid back)
TRIM_AT = 1024


class Numbered(Sequence[T | None]):
    """A list of `T | None` indexed from 0 whose leading None slots take no memory."""

    __slots__ = ("_base", "_head", "_items")

    def __init__(self, items: Iterable[T | None] = ()) -> None:
        self._base = 0  # slots before `_items[0]`: all None, dropped
        self._head = 0  # `_items[:_head]` are None too, not yet dropped
        self._items: list[T | None] = list(items)

    def __len__(self) -> int:
        return self._base + len(self._items)

    @overload
    def __getitem__(self, n: int) -> T | None: ...

    @overload
    def __getitem__(self, n: slice) -> list[T | None]: ...

    def __getitem__(self, n: int | slice) -> T | list[T | None] | None:
        if isinstance(n, slice):
            return list(self)[n]
        i = n - self._base
        if i >= 0:
            return self._items[i]
        if n < 0:
            return self._items[n]
        return None

    def __setitem__(self, n: int, value: T | None) -> None:
        if n < 0:
            n += len(self)
        i = n - self._base
        if i < 0:
            if value is None:
                return
            raise IndexError(f"slot {n} was let go and cannot be filled again")
        self._items[i] = value

    def release(self, n: int) -> None:
        """Empty slot `n` for good (its item will not come back): the empty slots at the
        front are dropped once there are enough of them (`base` says how many)."""
        self[n] = None
        items = self._items
        if n - self._base != self._head:
            return
        head = self._head + 1
        while head < len(items) and items[head] is None:
            head += 1
        self._head = head
        if head >= TRIM_AT and 2 * head >= len(items):
            self.cut(self._base + head)

    def cut(self, base: int) -> None:
        """Drop the slots before `base` (all empty: a companion's `base`, e.g. the results
        of the tasks `release`d)."""
        k = base - self._base
        if k <= 0:
            return
        del self._items[:k]
        self._base = base
        self._head = max(0, self._head - k)

    @property
    def base(self) -> int:
        """The slots before this one are dropped (all empty)."""
        return self._base

    def __iter__(self) -> Iterator[T | None]:
        return chain(repeat(None, self._base), self._items)

    def extend(self, items: Iterable[T | None]) -> None:
        self._items.extend(items)

    def grow(self, k: int) -> None:
        """`k` empty slots at the end; when no slot is live they take no memory."""
        if self._head == len(self._items):
            self._base += len(self._items) + k
            self._items.clear()
            self._head = 0
        else:
            self._items.extend([None] * k)

    @property
    def held(self) -> int:
        """Slots in memory (tests check that this does not grow with the run)."""
        return len(self._items)
