"""Lightning data modules over prepared token shards: `data=shards` reads a directory
written by `dimba data prepare`; `data=builtin` and `data=text_files` prepare their text
once into the cache (see `dimba.data.cache`) and read it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import lightning as L
from torch.utils.data import DataLoader

from dimba.data.config import DataConfig, ShardsDataConfig, TokenizerConfig
from dimba.data.format import check_seq_len, read_manifest
from dimba.data.records import check_tokenizer_config, prepared_tokenizer
from dimba.data.sampler import EpochShuffleSampler, ResumableDataLoader, WindowDataset
from dimba.data.stream import TokenStream
from dimba.data.tokenizer import Tokenizer, as_tokenizer_config
from dimba.errors import ConfigError

__all__ = ["EpochShuffleSampler", "ResumableDataLoader", "ShardsDataModule", "TextDataModule", "WindowDataset"]

TokenizerArg = Union[TokenizerConfig, Mapping[str, Any], None]


class _PreparedDataModule(L.LightningDataModule):
    """Windows over the train and validation ranges of one prepared directory."""

    def __init__(self, seq_len: int, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Optional[WindowDataset] = None
        self.val_set: Optional[WindowDataset] = None

    # The subclass says where the data is and how it splits.
    def _directory(self) -> Tuple[Path, Dict[str, Any]]:
        raise NotImplementedError

    def _ranges(self, manifest: Mapping[str, Any], total: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        raise NotImplementedError

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer the data was prepared with (decode samples, ship with exports)."""
        return prepared_tokenizer(*self._directory())

    @property
    def tokenizer_record(self) -> Dict[str, Any]:
        from dimba.data.records import tokenizer_record

        return tokenizer_record(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return int(self._directory()[1]["tokenizer"]["vocab_size"])

    def prepare_data(self) -> None:
        self._directory()

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        directory, manifest = self._directory()
        stream = TokenStream(directory, manifest)
        (train_start, train_end), (val_start, val_end) = self._ranges(manifest, len(stream))
        self.train_set = WindowDataset(stream, train_start, train_end, self.seq_len)
        self.val_set = WindowDataset(stream, val_start, val_end, self.seq_len)
        if len(self.train_set) < self.batch_size:  # a text's token count is known only once tokenized
            raise ConfigError("data.seq_len", self.seq_len, f"seq_len*batch_size at most {max(0, train_end - train_start)}: "
                                                            f"the training text holds {max(0, train_end - train_start)} tokens")

    def train_dataloader(self) -> ResumableDataLoader:
        return ResumableDataLoader(self.train_set, self.batch_size, EpochShuffleSampler(len(self.train_set), self.seed),
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)


class ShardsDataModule(_PreparedDataModule):
    """`data=shards data.path=DIR`: the splits `dimba data prepare` recorded."""

    def __init__(self, path: str, seq_len: int = ShardsDataConfig.seq_len, batch_size: int = ShardsDataConfig.batch_size,
                 num_workers: int = ShardsDataConfig.num_workers, seed: int = 0, tokenizer: TokenizerArg = None) -> None:
        super().__init__(seq_len, batch_size, num_workers, seed)
        self.path = Path(path).expanduser()
        self.manifest = read_manifest(self.path, key="data.path")
        check_seq_len(self.manifest, seq_len, batch_size, str(path))
        if tokenizer is not None:
            check_tokenizer_config(tokenizer, self.manifest, str(path))

    def _directory(self) -> Tuple[Path, Dict[str, Any]]:
        return self.path, self.manifest

    def _ranges(self, manifest: Mapping[str, Any], total: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        return tuple(manifest["splits"]["train"]), tuple(manifest["splits"]["val"])  # type: ignore[return-value]


class TextDataModule(_PreparedDataModule):
    """The built-in corpus or the user's own text files, split as always: the last
    `val_fraction` of the token stream (at least one sequence) is validation."""

    def __init__(
        self,
        files: Optional[List[str]] = None,
        seq_len: int = DataConfig.seq_len,
        batch_size: int = DataConfig.batch_size,
        val_fraction: float = DataConfig.val_fraction,
        num_workers: int = DataConfig.num_workers,
        seed: int = 0,
        tokenizer: TokenizerArg = None,
        cache_dir: Optional[str] = None,
    ) -> None:
        super().__init__(seq_len, batch_size, num_workers, seed)
        self.files = list(files or [])
        self.val_fraction = val_fraction
        self.tokenizer_config = as_tokenizer_config(tokenizer)
        self.cache_dir = cache_dir
        self._prepared: Optional[Tuple[Path, Dict[str, Any]]] = None

    def _directory(self) -> Tuple[Path, Dict[str, Any]]:
        if self._prepared is None:
            from dimba.data.cache import prepared_text

            directory = prepared_text(self.files, self.tokenizer_config, self.cache_dir)
            self._prepared = directory, read_manifest(directory)
        return self._prepared

    def _ranges(self, manifest: Mapping[str, Any], total: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        n_val = max(self.seq_len, int(total * self.val_fraction))
        return (0, total - n_val), (total - n_val, total)
