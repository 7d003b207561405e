"""Retiring published versions: every store (feature snapshots, scores in Redis or PostgreSQL)
keeps its live versions oldest first and deletes all but the newest `keep` after a publish."""

from __future__ import annotations

from collections.abc import Callable


def retire(count: Callable[[], int], pop_oldest: Callable[[], str | None],
           drop: Callable[[str], None], keep: int) -> list[str]:
    """While more than `keep` versions are live, take the oldest off the list (`pop_oldest`,
    None when another publisher took it first) and delete its data (`drop`); the versions
    deleted, oldest first. A reader still on a retired version finds it gone and reloads."""
    dropped = []
    while count() > keep:
        old = pop_oldest()
        if old is not None:
            drop(old)
            dropped.append(old)
    return dropped


def retire_redis(client, key: str, drop: Callable[[str], None], keep: int) -> list[str]:
    """`retire` over a Redis list of versions at `key` (oldest first, LPOP is atomic)."""

    def pop_oldest() -> str | None:
        old = client.lpop(key)
        return None if old is None else old.decode()

    return retire(lambda: client.llen(key), pop_oldest, drop, keep)
