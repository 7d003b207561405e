"""Micro-batching: the rows of concurrent requests scored in one model call.

A `CustomerScorer.score` call costs mostly per call (pandas, three boosters, TreeSHAP, the
simulation set-up), hardly per row, so eight one-row requests scored together cost little more
than one. `MicroBatcher.submit` queues a request; while the worker thread scores a batch, the
requests that arrive wait and then go together as the next batch. An idle batcher starts at
once: no request waits for a timer unless `max_wait` asks for one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Request(Generic[K, T]):
    key: K
    items: list[T]
    future: asyncio.Future = field(repr=False)


class MicroBatcher(Generic[K, T, R]):
    """Runs `fn(key, items, sizes) -> one result per item` on batches of concurrent requests.

    `items` are the batched requests' items one after another and `sizes` how many each
    request has, so that `fn` can keep the requests independent (the scorer restarts its
    random draws per request: a batched answer is the answer the request gets alone).
    Requests are batched only with neighbours of the same `key` (the served bundle, so a batch
    never mixes two models during a hot reload), up to `max_items` items (a larger request runs
    alone). If a batch of several requests fails, each is re-run alone, so an error reaches only
    the request that caused it. `fn` runs on one worker thread, one batch at a time.
    """

    def __init__(self, fn: Callable[[K, list[T], list[int]], Sequence[R]], *,
                 max_items: int = 1000, max_wait: float = 0.0,
                 name: str = "microbatch") -> None:
        self.fn = fn
        self.max_items = max_items
        self.max_wait = max_wait
        self.batches = self.requests = self.items = 0
        self._pending: deque[_Request[K, T]] = deque()
        self._draining: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def submit(self, key: K, items: Sequence[T]) -> list[R]:
        """This request's results, in the order of its items (or its own exception)."""
        loop = asyncio.get_running_loop()
        request = _Request(key, list(items), loop.create_future())
        self._pending.append(request)
        if self._draining is None:
            self._draining = loop.create_task(self._drain())
        return await request.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.max_wait > 0:
                    await asyncio.sleep(self.max_wait)
                batch = [r for r in self._take() if not r.future.done()]  # skip cancelled
                if not batch:
                    continue
                outcomes = await loop.run_in_executor(self._executor, self._run, batch)
                for request, (result, error) in zip(batch, outcomes, strict=True):
                    if request.future.done():
                        continue
                    if error is not None:
                        request.future.set_exception(error)
                    else:
                        request.future.set_result(result)
        finally:
            self._draining = None

    def _take(self) -> list[_Request[K, T]]:
        first = self._pending.popleft()
        batch, size = [first], len(first.items)
        while (self._pending and self._pending[0].key is first.key
               and size + len(self._pending[0].items) <= self.max_items):
            batch.append(self._pending.popleft())
            size += len(batch[-1].items)
        return batch

    def _run(self, batch: list[_Request[K, T]]) -> list[tuple[list[R] | None,
                                                              BaseException | None]]:
        items = [item for request in batch for item in request.items]
        try:
            results = list(self.fn(batch[0].key, items, [len(r.items) for r in batch]))
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for "
                                   f"{len(items)} items")
        except Exception as exc:  # noqa: BLE001 - handed to the request(s) that caused it
            if len(batch) == 1:
                return [(None, exc)]
            return [outcome for request in batch for outcome in self._run([request])]
        self.batches += 1
        self.requests += len(batch)
        self.items += len(items)
        out, at = [], 0
        for request in batch:
            out.append((results[at:at + len(request.items)], None))
            at += len(request.items)
        return out
