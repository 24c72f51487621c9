"""Prepared shards read as one token stream, memory-mapped: nothing is loaded up front.

Each process maps the files on its first read (the maps are not pickled to DataLoader
workers), so every worker and rank shares the operating system's page cache and a
process's memory does not grow with the corpus.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from dimba.data.format import DataError


class TokenStream:
    def __init__(self, directory: Path, manifest: Mapping[str, Any], key: str = "data.path") -> None:
        self.dtype = np.dtype(manifest["dtype"])
        self.files = [Path(directory) / shard["file"] for shard in manifest["shards"]]
        counts = [int(shard["tokens"]) for shard in manifest["shards"]]
        for file, count in zip(self.files, counts):
            if os.path.getsize(file) != count * self.dtype.itemsize:
                raise DataError(key, str(file), f"a shard of {count} tokens as the manifest says (prepare the data again)")
        self.offsets = np.cumsum([0] + counts)
        self._maps: Optional[List[Optional[np.memmap]]] = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_maps": None}

    def _map(self, shard: int) -> np.memmap:
        if self._maps is None:
            self._maps = [None] * len(self.files)
        if self._maps[shard] is None:
            self._maps[shard] = np.memmap(self.files[shard], dtype=self.dtype, mode="r")
        return self._maps[shard]

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) as int64, across shard boundaries if need be."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"tokens {start}..{start + length} outside the stream of {len(self)}")
        out = np.empty(length, dtype=np.int64)
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1
        filled = 0
        while filled < length:
            begin = start + filled - int(self.offsets[shard])
            take = min(length - filled, int(self.offsets[shard + 1]) - int(self.offsets[shard]) - begin)
            out[filled:filled + take] = self._map(shard)[begin:begin + take]
            filled += take
            shard += 1
        return out
