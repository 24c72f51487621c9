"""Two ranks (gloo, two processes) on prepared shards: in an epoch they see disjoint
sequences that together cover it, and each, resumed mid-epoch, continues exactly where
it stopped, with two loader workers each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from dimba.data import ShardsDataModule
from dimba.data.prepare import prepare

WORLD = 2


def rank_main(rank: int, path: str, out: str, init: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        data = ShardsDataModule(path, seq_len=48, batch_size=4, seed=7, num_workers=2)
        data.setup()
        loader = data.train_dataloader()
        loader.sampler.set_epoch(1)
        indices = list(loader.sampler)
        straight = [b.clone() for b in loader]
        resumed = data.train_dataloader()
        resumed.load_state_dict({"epoch": 1, "trained_batches": 5})
        rest = [b.clone() for b in resumed]
        result = {
            "indices": indices,
            "batches": len(straight),
            "resumed_exactly": len(rest) == len(straight) - 5 and all(torch.equal(a, b) for a, b in zip(rest, straight[5:])),
        }
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_see_disjoint_samples_and_resume_exactly(tmp_path, monkeypatch):
    (tmp_path / "corpus.txt").write_text("".join(f"{i:05d} two ranks share one epoch between them\n" for i in range(900)))
    prepare([str(tmp_path / "corpus.txt")], tmp_path / "prepared", workers=0, piece_bytes=2048)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the forked ranks only: not left set for later tests
    # Forked, like the DataLoader workers inside each rank: what is imported here is not imported again.
    mp.start_processes(rank_main, args=(str(tmp_path / "prepared"), str(tmp_path), f"file://{tmp_path / 'rendezvous'}"),
                       nprocs=WORLD, join=True, start_method="fork")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    data = ShardsDataModule(str(tmp_path / "prepared"), seq_len=48, batch_size=4)
    data.setup()
    n = len(data.train_set)
    first, second = (set(r["indices"]) for r in ranks)
    assert not first & second  # disjoint within the epoch
    assert len(first) == len(second) == n // WORLD and len(first | second) == n - n % WORLD
    assert ranks[0]["batches"] == ranks[1]["batches"] == (n // WORLD) // 4
    assert all(r["resumed_exactly"] for r in ranks)
