"""Background milestone writes: training waits only for a snapshot, never for the disk.

`progressive_checkpoints.async_save=true`: at a milestone the checkpoint (whose tensors
are the live weights and optimizer moments) goes to one background thread, which first
copies its tensors (`snapshot`) while the next forward and backward pass run; the next
optimizer step waits for that copy, the only blocking part. The thread then writes the
bytes, fsyncs them and publishes the milestone (sidecar, final name); only then does the
milestone count as saved. One write is in flight at a time: a second save first waits for
the one before it.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional

import torch

log = logging.getLogger(__name__)


def snapshot(obj: Any, memo: Optional[Dict[int, Any]] = None) -> Any:
    """A copy of a checkpoint whose tensors no later optimizer step can change.

    Tensors are copied to (CPU) memory once each: the seed's keys alias Lightning's
    tensors, and the copy keeps them aliased, so the file still stores each storage once.
    Everything else (numbers, strings, lists, dicts) is copied structurally.
    """
    memo = {} if memo is None else memo
    if isinstance(obj, torch.Tensor):
        key = id(obj)
        if key not in memo:
            memo[key] = obj.detach().to("cpu", copy=True)
        return memo[key]
    if isinstance(obj, dict):
        return type(obj)((k, snapshot(v, memo)) for k, v in obj.items())
    if isinstance(obj, list):
        return [snapshot(v, memo) for v in obj]
    if isinstance(obj, tuple):
        return tuple(snapshot(v, memo) for v in obj)
    return obj


class BackgroundWriter:
    """One worker thread; `submit` waits for the previous write before queueing the next."""

    def __init__(self) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None
        self._pending: Optional[Future] = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the worker thread now, so that no save pays for starting it."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dimba-milestone-writer")
                self._executor.submit(lambda: None).result()

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def submit(self, write: Callable[[], Any]) -> Optional[BaseException]:
        """Wait for the write in flight (returning its error, if any), then start `write`."""
        error = self.wait()
        self.start()
        with self._lock:
            assert self._executor is not None
            self._pending = self._executor.submit(write)
        return error

    def wait(self) -> Optional[BaseException]:
        """Block until no write is in flight; the finished write's exception, or None."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return None
        return pending.exception()

    def poll(self) -> Optional[BaseException]:
        """A finished write's exception (clearing it), without waiting; None otherwise."""
        with self._lock:
            pending = self._pending
            if pending is None or not pending.done():
                return None
            self._pending = None
        return pending.exception()

    def close(self) -> Optional[BaseException]:
        error = self.wait()
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
        return error
