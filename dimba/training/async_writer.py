"""Background milestone writes: training waits only for a copy in memory, never for the disk.

`progressive_checkpoints.async_save=true`: at a milestone the checkpoint (whose tensors are
the live weights and optimizer moments) goes to one background thread. The thread first
copies its tensors (`snapshot`) while the next forward and backward pass run; the next
optimizer step waits for that copy (`BackgroundSave.wait_copied`), the only blocking part.
The thread then writes, fsyncs and publishes the files, and that is all it does: it
returns its result in a future, and the trainer applies it to the milestone state on the
training thread. One write is in flight at a time.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch

from dimba.checkpointing.pending import PendingSave


def snapshot(obj: Any) -> Any:
    """A copy of a checkpoint whose tensors no later optimizer step can change.

    Tensors are copied to (CPU) memory once each: the milestone format's keys alias Lightning's
    tensors, and the copy keeps them aliased, so the file still stores each storage once.
    Everything else (numbers, strings, lists, dicts) is copied structurally.
    """
    memo: Dict[int, Any] = {}

    def copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if id(value) not in memo:
                memo[id(value)] = value.detach().to("cpu", copy=True)
            return memo[id(value)]
        if isinstance(value, dict):
            return type(value)((k, copy(v)) for k, v in value.items())
        if isinstance(value, list):
            return [copy(v) for v in value]
        if isinstance(value, tuple):
            return tuple(copy(v) for v in value)
        return value

    return copy(obj)


@dataclass
class BackgroundSave:
    """A save handed to the background thread: set `copied` once it holds its own copy; the
    future resolves once the files are published (or with the write's error)."""

    pending: PendingSave
    copied: threading.Event
    future: Future

    def wait_copied(self) -> None:
        self.copied.wait()

    def done(self) -> bool:
        return self.future.done()

    def error(self) -> Optional[BaseException]:
        """Blocks until the write is over; its exception, or None."""
        return self.future.exception()


class BackgroundWriter:
    """One worker thread, started before training so that no save pays for starting it."""

    def __init__(self) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dimba-milestone-writer")
            self._executor.submit(lambda: None).result()

    def submit(self, pending: PendingSave, checkpoint: Dict[str, Any],
               write: Callable[[Dict[str, Any]], Any]) -> BackgroundSave:
        """Copy `checkpoint` and call `write(copy)` in the background; returns at once."""
        self.start()
        assert self._executor is not None
        copied = threading.Event()

        def job() -> Any:
            copy: Dict[str, Any] = {}
            try:
                copy.update(snapshot(checkpoint))
            finally:
                copied.set()
            try:
                return write(copy)
            finally:
                copy.clear()  # drop the snapshot's memory as soon as it is on disk

        return BackgroundSave(pending, copied, self._executor.submit(job))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
