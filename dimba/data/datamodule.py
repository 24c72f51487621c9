"""Text to fixed-length byte sequences, with a deterministic train/validation split."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from dimba.data.corpus import builtin_corpus
from dimba.data.schema import DataConfig


class SequenceDataset(Dataset):
    """Non-overlapping windows of `seq_len` tokens over one long token stream."""

    def __init__(self, tokens: torch.Tensor, seq_len: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.tokens) // self.seq_len

    def __getitem__(self, index: int) -> torch.Tensor:
        start = index * self.seq_len
        return self.tokens[start : start + self.seq_len]


def load_bytes(files: Sequence[str]) -> bytes:
    """The built-in corpus when `files` is empty, else the files' bytes joined by newlines.

    Bytes, not text: the tokenizer is byte-level, so any file (even invalid UTF-8) trains
    and a file's size is its token count, which config validation relies on.
    """
    if not files:
        return builtin_corpus().encode("utf-8")
    return b"\n".join(Path(f).read_bytes() for f in files)


def split_tokens(tokens: torch.Tensor, seq_len: int, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The last `val_fraction` of the stream is validation (at least one sequence)."""
    n_val = max(seq_len, int(len(tokens) * val_fraction))
    return tokens[:-n_val], tokens[-n_val:]


class EpochShuffleSampler(Sampler[int]):
    """A permutation per epoch drawn from (seed, epoch) alone, sharded across ranks.

    It owns its randomness (nothing from the global RNG), and it can start part-way into
    an epoch, so a resumed run sees exactly the batches an uninterrupted run would have.
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

    def __iter__(self):
        rank, world = self._world()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)[: len(self) * world]
        start, self.start = self.start, 0
        return iter(order[rank::world][start:].tolist())


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


class TextDataModule(L.LightningDataModule):
    """Byte-level sequences from the built-in corpus or the user's own text files."""

    def __init__(
        self,
        files: Optional[List[str]] = None,
        seq_len: int = DataConfig.seq_len,
        batch_size: int = DataConfig.batch_size,
        val_fraction: float = DataConfig.val_fraction,
        num_workers: int = DataConfig.num_workers,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.seed = seed
        self.files = list(files or [])
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.num_workers = num_workers
        self.train_set: Optional[SequenceDataset] = None
        self.val_set: Optional[SequenceDataset] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        tokens = torch.frombuffer(bytearray(load_bytes(self.files)), dtype=torch.uint8).long()
        train, val = split_tokens(tokens, self.seq_len, self.val_fraction)
        self.train_set = SequenceDataset(train, self.seq_len)
        self.val_set = SequenceDataset(val, self.seq_len)

    def train_dataloader(self) -> ResumableDataLoader:
        return ResumableDataLoader(self.train_set, self.batch_size, EpochShuffleSampler(len(self.train_set), self.seed),
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
