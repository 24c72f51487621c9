"""progressive_checkpoints.async_save: training waits for a copy, never for the disk,
and a milestone counts as saved only once its write is durable."""

from __future__ import annotations

import errno
import threading
import time

import lightning as L
import pytest
import torch
import dimba.io.writer as writer_module
import dimba.training.async_writer as async_module
from dimba.checkpointing.pending import PendingSave
from dimba.errors import CheckpointWriteError
from dimba.training import DIMBALightningModule
from dimba.training.async_writer import snapshot

from conftest import HANG_GUARD_S

MILESTONES = [1000, 2000, 10**12]


def make_module(config, save_dir, async_save: bool) -> DIMBALightningModule:
    torch.manual_seed(0)
    return DIMBALightningModule(vocab_size=256, model_config=config.to_dict(), enable_progressive_checkpoints=True,
                                progressive_milestones=MILESTONES, progressive_save_dir=str(save_dir),
                                progressive_async_save=async_save, warmup_steps=0)


class StepLog(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.steps.append(trainer.global_step)


def block_commits(monkeypatch, release: threading.Event, fail: bool = False) -> list[int]:
    """Hold every background milestone write, before its first byte, until `release` is
    set (a slow disk); with `fail`, the held write then dies before it is published (the
    process was killed before the write was durable)."""
    original_save, original_publish = writer_module.save_file, writer_module.publish
    seen_steps: list[int] = []

    def held_save(checkpoint, tmp, final):
        if threading.current_thread().name.startswith("dimba-milestone-writer"):
            seen_steps.append(checkpoint["global_step"])
            assert release.wait(timeout=HANG_GUARD_S), "the test never released the write"
        return original_save(checkpoint, tmp, final)

    def publish(written, *args, **kwargs):
        if fail:
            raise OSError(errno.EIO, "simulated: the process died before this write was durable")
        return original_publish(written, *args, **kwargs)

    monkeypatch.setattr(writer_module, "save_file", held_save)
    monkeypatch.setattr(writer_module, "publish", publish)
    return seen_steps


def milestone_files(save_dir):
    return sorted(p.name for p in save_dir.glob("checkpoint_*.pt"))


def test_background_saves_equal_synchronous_ones_even_when_copy_and_disk_are_slow(
        tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, monkeypatch):
    sync_dir, async_dir = tmp_path / "sync", tmp_path / "async"
    L.Trainer(max_steps=4, **quiet_trainer_kwargs).fit(make_module(tiny_model_config, sync_dir, False), token_loader())

    release = threading.Event()
    held_steps = block_commits(monkeypatch, release)
    steps = StepLog()
    slow_copy = async_module.snapshot

    def slow_snapshot(checkpoint):  # the copy is still running when step 2's optimizer step is due
        time.sleep(0.5)
        return slow_copy(checkpoint)

    monkeypatch.setattr(async_module, "snapshot", slow_snapshot)

    class Release(L.Callback):  # let the write finish only after training went on
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 4:
                release.set()

    module = make_module(tiny_model_config, async_dir, True)
    L.Trainer(max_steps=4, callbacks=[steps, Release()], **quiet_trainer_kwargs).fit(module, token_loader())

    assert held_steps == [1] and steps.steps == [1, 2, 3, 4]  # steps 2-4 ran while the step-1 write was held
    assert milestone_files(async_dir) == milestone_files(sync_dir) == [
        "checkpoint_1.0K_step_1.pt", "checkpoint_2.0K_step_1.pt"]
    ours = torch.load(async_dir / "checkpoint_2.0K_step_1.pt", weights_only=True)
    reference = torch.load(sync_dir / "checkpoint_2.0K_step_1.pt", weights_only=True)
    for name, tensor in reference["model_state_dict"].items():  # the step-1 weights, not later ones
        assert torch.equal(ours["model_state_dict"][name], tensor), name
    assert ours["reached_milestones"] == [1000, 2000]
    assert module.progressive_checkpoint.manager.reached_milestones == [1000, 2000]


def test_a_crash_before_the_write_is_durable_saves_the_milestone_again_after_resume(
        tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, monkeypatch):
    save_dir, mid = tmp_path / "milestones", tmp_path / "mid.ckpt"
    release = threading.Event()
    block_commits(monkeypatch, release, fail=True)

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                trainer.save_checkpoint(mid)  # what last.ckpt holds when the process dies
                release.set()
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        L.Trainer(max_steps=6, callbacks=[Crash()], **quiet_trainer_kwargs).fit(
            make_module(tiny_model_config, save_dir, True), token_loader())
    assert milestone_files(save_dir) == []
    assert not list(save_dir.glob(".*"))  # no temporary left behind
    state = torch.load(mid, weights_only=True)["callbacks"]
    assert all(s.get("reached_milestones") == [] for s in state.values() if "reached_milestones" in s)

    monkeypatch.undo()
    module = make_module(tiny_model_config, save_dir, True)
    L.Trainer(max_steps=6, **quiet_trainer_kwargs).fit(module, token_loader(), ckpt_path=str(mid))
    assert milestone_files(save_dir) == ["checkpoint_1.0K_step_4.pt", "checkpoint_2.0K_step_4.pt"]
    assert [e["status"] for e in module.progressive_checkpoint.manager.list_checkpoints()] == ["ok", "ok"]


def test_a_write_that_finished_after_the_resume_point_is_not_repeated(
        tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, monkeypatch):
    save_dir, mid = tmp_path / "milestones", tmp_path / "mid.ckpt"
    release = threading.Event()
    block_commits(monkeypatch, release)

    class SaveThenRelease(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                trainer.save_checkpoint(mid)  # taken while the step-1 milestone was still in flight
                release.set()

    L.Trainer(max_steps=4, callbacks=[SaveThenRelease()], **quiet_trainer_kwargs).fit(
        make_module(tiny_model_config, save_dir, True), token_loader())
    monkeypatch.undo()
    L.Trainer(max_steps=6, **quiet_trainer_kwargs).fit(make_module(tiny_model_config, save_dir, True), token_loader(),
                                                       ckpt_path=str(mid))
    assert milestone_files(save_dir) == ["checkpoint_1.0K_step_1.pt", "checkpoint_2.0K_step_1.pt"]


def test_a_failed_background_write_stops_the_run_with_the_file_named(
        tmp_path, tiny_model_config, token_loader, quiet_trainer_kwargs, monkeypatch):
    def full_disk(written, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module, "publish", full_disk)
    save_dir = tmp_path / "milestones"
    with pytest.raises(CheckpointWriteError, match=r"Cannot write milestone checkpoint .*checkpoint_2\.0K_step_1\.pt: "
                                                   r"No space left on device"):
        L.Trainer(max_steps=50, **quiet_trainer_kwargs).fit(make_module(tiny_model_config, save_dir, True), token_loader())
    assert milestone_files(save_dir) == [] and not list(save_dir.glob(".*"))


def test_a_second_write_waits_for_the_first(tmp_path):
    """One write in flight at a time: the callback settles the first before queueing the next."""
    from types import SimpleNamespace

    from dimba.training.milestone_callback import ProgressiveCheckpointCallback

    callback = ProgressiveCheckpointCallback([1000, 2000], tmp_path, async_save=True)
    order, gate = [], threading.Event()

    def first(copy) -> None:
        gate.wait(timeout=HANG_GUARD_S)
        order.append("first")

    trainer = SimpleNamespace(is_global_zero=True, world_size=1, loggers=[])
    callback._background = callback.writer.submit(PendingSave((1000,), 1, 1500), {}, first)
    second = threading.Thread(target=lambda: callback._start_background(trainer, {}, PendingSave((2000,), 2, 2500)))
    second.start()
    time.sleep(0.2)
    assert order == [] and second.is_alive()  # the second save is waiting for the first write
    gate.set()
    second.join(timeout=HANG_GUARD_S)
    assert order == ["first"] and callback.manager.reached_milestones == [1000]  # applied on this thread
    callback.writer.close()


def test_the_snapshot_is_a_copy_and_keeps_aliases_shared():
    weight = torch.ones(3)
    checkpoint = {"state_dict": {"model.w": weight}, "model_state_dict": {"w": weight}, "global_step": 7}
    copy = snapshot(checkpoint)
    weight.add_(1)  # the optimizer steps on
    assert torch.equal(copy["state_dict"]["model.w"], torch.ones(3)) and copy["global_step"] == 7
    assert copy["state_dict"]["model.w"] is copy["model_state_dict"]["w"]  # stored once in the file


def test_under_ddp_a_failed_background_write_stops_the_next_save_on_every_rank(tmp_path):
    """Rank zero finds the failure between saves; it is raised (broadcast) at the next save."""
    from types import SimpleNamespace

    from dimba.training.milestone_callback import ProgressiveCheckpointCallback

    callback = ProgressiveCheckpointCallback([1000, 2000], tmp_path, async_save=True)
    pending = PendingSave((1000,), 1, 1500)

    def fails(copy) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    callback._background = callback.writer.submit(pending, {}, fails)
    callback.checkpointer.started(pending, background=True)
    callback._background.future.exception(timeout=HANG_GUARD_S)  # the write has failed
    trainer = SimpleNamespace(is_global_zero=True, world_size=2, loggers=[])
    callback._collect(trainer)  # every step: parked, not raised (other ranks would hang)
    assert callback._failed is not None and callback.manager.reached_milestones == []
    error = callback._start_background(trainer, {}, PendingSave((2000,), 5, 3000))
    assert error is not None and "No space left on device" in error  # the caller broadcasts it and raises
    callback.writer.close()
