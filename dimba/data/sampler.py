"""Fixed-length windows over a token stream, a resumable shuffled order, a loader that
Lightning checkpoints.

Workers: the datasets are map-style, so the sampler runs in the main process and each
batch of indices goes to exactly one DataLoader worker (round robin), and batches come
back in sampler order. The split across workers is disjoint by construction and the
batch sequence is the same for any `num_workers`; the split across ranks is the sampler's.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from dimba.data.stream import TokenStream

ORDER_CHUNK = 1 << 16


class WindowDataset(Dataset):
    """Non-overlapping windows of `seq_len` tokens over tokens [start, end) of a stream."""

    def __init__(self, stream: TokenStream, start: int, end: int, seq_len: int) -> None:
        self.stream, self.start, self.end, self.seq_len = stream, int(start), int(end), int(seq_len)

    def __len__(self) -> int:
        return (self.end - self.start) // self.seq_len

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"sequence {index} of {len(self)}")
        return torch.from_numpy(self.stream.read(self.start + index * self.seq_len, self.seq_len))

    @property
    def tokens(self) -> torch.Tensor:
        """Every token of the range at once (small corpora only: benchmarks compare texts)."""
        return torch.from_numpy(self.stream.read(self.start, self.end - self.start))


class EpochShuffleSampler(Sampler[int]):
    """A permutation per epoch drawn from (seed, epoch) alone, sharded across ranks.

    It owns its randomness (nothing from the global RNG), and it can start part-way into
    an epoch, so a resumed run sees exactly the batches an uninterrupted run would have.
    Memory: the permutation, 8 bytes per sequence (64 MB for 2 GB of bytes at seq_len 256).
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0
        self.start = 0  # samples of this rank's share already trained on in this epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return self.size // self._world()[1]

    def __iter__(self) -> Iterator[int]:
        rank, world = self._world()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: len(self) * world]
        start, self.start = self.start, 0
        return _chunked(order[rank::world][start:])


def _chunked(order: torch.Tensor) -> Iterator[int]:
    """Python ints a chunk at a time: a list of millions of ints would cost ~36 bytes each."""
    for begin in range(0, len(order), ORDER_CHUNK):
        yield from order[begin:begin + ORDER_CHUNK].tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader Lightning can checkpoint: it records how far into the epoch training got.

    The module reports each batch as it starts (`mark_trained`); Lightning stores
    `state_dict()` in every checkpoint and hands it back on resume.
    """

    def __init__(self, dataset: Dataset, batch_size: int, sampler: EpochShuffleSampler, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.trained_batches = 0

    def mark_trained(self, batch_idx: int) -> None:
        self.trained_batches = batch_idx + 1

    def state_dict(self) -> Dict[str, int]:
        return {"epoch": self.sampler.epoch, "trained_batches": self.trained_batches}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.trained_batches = int(state["trained_batches"])
        self.sampler.start = self.trained_batches * self.batch_size
