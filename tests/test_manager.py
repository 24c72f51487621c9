"""ProgressiveCheckpointManager: the save/list/load/resume story of its API."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from dimba.errors import CheckpointLoadError
from dimba.model import DIMBA
from dimba.utils.checkpointing import ProgressiveCheckpointManager, parse_milestone_input

SEED_KEYS = {
    "model_state_dict", "optimizer_state_dict", "global_step", "current_params",
    "target_milestone", "milestones", "reached_milestones", "metadata",
}


def _trained(model: torch.nn.Module) -> torch.optim.Optimizer:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.loss(torch.randint(0, 256, (2, 16)))["loss"].backward()
    optimizer.step()
    return optimizer


def test_seed_document_save_list_and_resume(tmp_path, tiny_model_config):
    model = DIMBA(tiny_model_config)
    optimizer = _trained(model)
    n = ProgressiveCheckpointManager.count_parameters(model)
    milestones = [n // 4, n // 2, 10 * n]
    save_dir = tmp_path / "progressive_checkpoints"

    manager = ProgressiveCheckpointManager(milestones=milestones, save_dir=str(save_dir))
    assert manager.should_save_checkpoint(model) == (True, n // 4)
    path = manager.save_checkpoint(model, optimizer, global_step=10, metadata={"loss": torch.tensor(1.5)})
    assert manager.should_save_checkpoint(model) == (False, None)
    assert manager.get_next_milestone() == 10 * n

    checkpoint = torch.load(path, weights_only=True)
    assert SEED_KEYS <= set(checkpoint)
    assert checkpoint["global_step"] == 10 and checkpoint["current_params"] == n
    assert checkpoint["reached_milestones"] == milestones[:2]
    assert checkpoint["optimizer_state_dict"]["state"]  # real AdamW moments

    # Viewing checkpoints with a manager of dummy milestones (the API's documented viewing use).
    viewer = ProgressiveCheckpointManager(milestones=[1_000_000_000], save_dir=str(save_dir))
    listed = viewer.list_checkpoints()
    assert [(cp["target_milestone"], cp["global_step"]) for cp in listed] == [(n // 4, 10), (n // 2, 10)]
    assert all(cp["milestone_str"] and Path(cp["path"]).is_file() for cp in listed)
    sidecar = json.loads(Path(listed[0]["metadata_path"]).read_text())
    assert sidecar["checkpoint"] == Path(listed[0]["path"]).name
    assert sidecar["current_params"] == n and sidecar["current_params_str"]
    assert sidecar["metadata"] == {"loss": 1.5}

    # Resuming, as the API documents it, with a fresh model and optimizer.
    resumed_model = DIMBA(tiny_model_config)
    resumed_opt = torch.optim.AdamW(resumed_model.parameters(), lr=1e-3)
    resumer = ProgressiveCheckpointManager(milestones=milestones, save_dir=str(save_dir))
    info = resumer.load_checkpoint(filepath=path, model=resumed_model, optimizer=resumed_opt)
    assert info["global_step"] == 10
    assert resumer.get_next_milestone() == 10 * n  # nothing is saved twice
    assert resumer.should_save_checkpoint(resumed_model) == (False, None)
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key])
    assert resumed_opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0


def test_several_milestones_in_one_save_share_one_serialization(tmp_path, tiny_model_config, monkeypatch):
    model = DIMBA(tiny_model_config)
    n = ProgressiveCheckpointManager.count_parameters(model)
    manager = ProgressiveCheckpointManager([n // 3, n // 2, n], tmp_path)
    saves = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saves.append(f), real_save(obj, f, *a, **k)))
    manager.save_checkpoint(model, global_step=1)
    assert len(saves) == 1
    paths = [Path(manager.get_checkpoint_path_for_milestone(m)) for m in (n // 3, n // 2, n)]
    assert len({p.name for p in paths}) == 3
    assert all(p.is_file() and p.with_suffix(".json").is_file() for p in paths)
    assert len({os.stat(p).st_ino for p in paths}) == 1  # hard links: one set of bytes on disk
    for m, p in zip((n // 3, n // 2, n), paths):
        assert json.loads(p.with_suffix(".json").read_text())["target_milestone"] == m


def test_lookalike_milestones_never_overwrite_or_confuse(tmp_path, tiny_model_config):
    model = DIMBA(tiny_model_config)
    manager = ProgressiveCheckpointManager([1_000_000, 1_040_000], tmp_path)
    a = manager.save_checkpoint(model, global_step=5, milestone=1_000_000)
    b = manager.save_checkpoint(model, global_step=5, milestone=1_040_000)
    assert a != b and Path(a).is_file() and Path(b).is_file()
    assert manager.get_checkpoint_path_for_milestone(1_000_000) == a
    assert manager.get_checkpoint_path_for_milestone("1.04M") == b
    assert Path(a).name == "checkpoint_1.0M_step_5.pt"


def test_file_names_follow_the_seed(tmp_path, tiny_model_config):
    model = DIMBA(tiny_model_config)
    manager = ProgressiveCheckpointManager([1_000_000_000], tmp_path)
    path = manager.save_checkpoint(model, global_step=10000, milestone=parse_milestone_input("1")[0])
    assert Path(path).name == "checkpoint_1.0B_step_10000.pt"
    assert (tmp_path / "checkpoint_1.0B_step_10000.json").is_file()


def test_listing_skips_interrupted_writes_and_marks_unreadable_ones(tmp_path, tiny_model_config):
    model = DIMBA(tiny_model_config)
    manager = ProgressiveCheckpointManager([1, 2], tmp_path)
    manager.save_checkpoint(model, global_step=1, milestone=1)
    good = manager.save_checkpoint(model, global_step=2, milestone=2)
    (tmp_path / ".checkpoint_3.0M_step_9.pt.tmp").write_bytes(b"partial")  # killed mid-write
    (tmp_path / "checkpoint_3.0M_step_9.pt").write_bytes(b"no sidecar yet")  # killed before its sidecar
    (tmp_path / "checkpoint_4.0M_step_9.json").write_text("{not json")
    with open(good, "r+b") as handle:  # truncated after the sidecar was written
        handle.truncate(1000)

    listed = manager.list_checkpoints()
    assert [(e["target_milestone"], e["milestone_str"], e["status"]) for e in listed] == [
        (-1, "4.0M", "unreadable"), (1, "1", "ok"), (2, "2", "unreadable")
    ]
    assert "1000 bytes on disk" in listed[2]["error"]
    for cp in listed:  # the API's listing loop still works on every entry
        assert f"{cp['milestone_str']}: step {cp['global_step']}"
    assert manager.saved_milestones() == [1]
    assert manager.get_checkpoint_path_for_milestone(2) is None

    orphan = tmp_path / "checkpoint_1_step_1.json"
    (tmp_path / "checkpoint_5.0M_step_9.json").write_text(orphan.read_text())  # ours, its .pt never published
    manager.prepare_save_dir()  # the next start cleans up what was never complete
    assert not (tmp_path / ".checkpoint_3.0M_step_9.pt.tmp").exists()
    assert not (tmp_path / "checkpoint_5.0M_step_9.json").exists()
    assert (tmp_path / "checkpoint_3.0M_step_9.pt").exists()  # not ours to delete: just never listed
    assert Path(good).exists()  # complete once: kept for the user to inspect


def test_corrupt_and_malicious_checkpoints_are_refused(tmp_path, tiny_model_config):
    manager = ProgressiveCheckpointManager([1], tmp_path)
    truncated = tmp_path / "truncated.pt"
    path = manager.save_checkpoint(DIMBA(tiny_model_config), global_step=1)
    truncated.write_bytes(Path(path).read_bytes()[:1000])
    with pytest.raises(CheckpointLoadError, match="truncated.pt"):
        manager.load_checkpoint(truncated)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as handle:
        pickle.dump({"model_state_dict": Exploit()}, handle)
    with pytest.raises(CheckpointLoadError, match="evil.pt"):
        manager.load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def test_saving_without_a_crossed_milestone_says_why(tmp_path, tiny_model_config):
    manager = ProgressiveCheckpointManager([10**12], tmp_path)
    with pytest.raises(ValueError, match="next milestone is 1.0T"):
        manager.save_checkpoint(DIMBA(tiny_model_config), global_step=1)


def test_disabled_manager_never_asks_to_save(tmp_path, tiny_model_config):
    manager = ProgressiveCheckpointManager([1], tmp_path, enabled=False)
    assert manager.should_save_checkpoint(DIMBA(tiny_model_config)) == (False, None)


def test_plain_path_resave_after_a_crash_between_grouped_files(tmp_path, tiny_model_config):
    """Two milestones saved together; the crash came before the second got its final name."""
    model = DIMBA(tiny_model_config)
    n = ProgressiveCheckpointManager.count_parameters(model)
    manager = ProgressiveCheckpointManager([n // 2, n], tmp_path)
    manager.save_checkpoint(model, global_step=7)
    Path(manager.get_checkpoint_path_for_milestone(n)).unlink()

    resumed = ProgressiveCheckpointManager([n // 2, n], tmp_path)
    resumed.load_checkpoint(resumed.get_checkpoint_path_for_milestone(n // 2), DIMBA(tiny_model_config))
    assert resumed.reached_milestones == [n // 2]
    assert resumed.should_save_checkpoint(model) == (True, n)  # saved again, not skipped
