"""An experiment adds its evaluations to dimba's own training loop, not a loop of its own:
`SimpleTrainer` calls its callbacks at the loop's points, and the benchmarks train through it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List

import torch

from dimba.training.simple import SimpleTrainer, TrainerCallback

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCHEDULE = [{"step": 2, "op": "depth", "n_layers": 3}, {"step": 4, "op": "width", "d_model": 48}]


class Recorder(TrainerCallback):
    """Writes down what the loop tells it, and stops the run after `stop_after` steps."""

    def __init__(self, stop_after: int) -> None:
        self.calls: List[tuple] = []
        self.stop_after = stop_after

    def on_train_start(self, trainer: SimpleTrainer) -> None:
        self.calls.append(("start", trainer.global_step))

    def should_stop(self, trainer: SimpleTrainer) -> bool:
        return trainer.global_step >= self.stop_after

    def on_train_batch_end(self, trainer: SimpleTrainer, outputs: Any, lr: float) -> None:
        self.calls.append(("batch_end", trainer.global_step, trainer.model.config.d_model, trainer.model.config.n_layers,
                           round(lr, 12), "loss" in outputs and not outputs["loss"].requires_grad))

    def on_before_growth(self, trainer: SimpleTrainer, event: Any) -> None:
        self.calls.append(("before_growth", trainer.global_step, trainer.model.config.n_layers, trainer.model.config.d_model))

    def on_after_growth(self, trainer: SimpleTrainer, event: Any) -> None:
        self.calls.append(("after_growth", trainer.global_step, trainer.model.config.n_layers, trainer.model.config.d_model))

    def on_step_end(self, trainer: SimpleTrainer) -> None:
        self.calls.append(("step_end", trainer.global_step))


def trainer(tiny_model_config, token_loader, callbacks=()) -> SimpleTrainer:
    return SimpleTrainer(train_loader=token_loader(n_batches=8), model_config=tiny_model_config, max_steps=8,
                         device="cpu", growth_schedule=SCHEDULE, warmup_steps=2, log_every_n_steps=0,
                         callbacks=callbacks)


def test_callbacks_see_each_step_and_each_growth_in_order_and_can_stop_the_run(tiny_model_config, token_loader):
    recorder = Recorder(stop_after=5)
    run = trainer(tiny_model_config, token_loader, [recorder])
    losses = run.train()
    assert len(losses) == 5 and run.global_step == 5  # stopped by the callback, before max_steps
    kinds = [c[0] for c in recorder.calls]
    assert kinds == ["start"] + ["batch_end", "step_end"] + ["batch_end", "before_growth", "after_growth", "step_end"] \
        + ["batch_end", "step_end"] + ["batch_end", "before_growth", "after_growth", "step_end"] + ["batch_end", "step_end"]
    d, n = tiny_model_config.d_model, tiny_model_config.n_layers
    growth = [c for c in recorder.calls if c[0].endswith("growth")]
    assert growth == [("before_growth", 2, n, d), ("after_growth", 2, 3, d), ("before_growth", 4, 3, d),
                      ("after_growth", 4, 3, 48)]
    batch_ends = [c for c in recorder.calls if c[0] == "batch_end"]
    assert [c[2] for c in batch_ends] == [d, d, d, d, 48]  # the size that trained the step, before it grows
    assert all(c[5] for c in batch_ends)  # the loss dict, detached
    assert [c[4] for c in batch_ends] == [round(run.optimizer.param_groups[0]["initial_lr"] * run.lr_schedule(s), 12)
                                          for s in range(5)]  # the rate each step used


def test_callbacks_change_nothing_the_model_learns(tiny_model_config, token_loader):
    plain = trainer(tiny_model_config, token_loader)
    plain.train()
    hooked = trainer(tiny_model_config, token_loader, [Recorder(stop_after=10**9)])
    hooked.train()
    for a, b in zip(plain.model.state_dict().values(), hooked.model.state_dict().values()):
        assert torch.equal(a, b)


def test_the_growth_experiment_trains_through_the_trainer_and_stops_at_its_budget():
    sys.path.insert(0, str(BENCH))
    import growth_runner
    from growth_eval import build_evalsets

    from dimba.data import TextDataModule
    from dimba.model import DIMBAConfig
    from dimba.model.config import ORIGINAL_RECIPE

    data = TextDataModule(seq_len=32, batch_size=2, seed=0)
    data.setup()
    evalsets = build_evalsets(torch.stack([data.val_set[i] for i in range(4)]), 1, 1000, 64)
    start = DIMBAConfig(d_model=32, n_layers=1, head_dim=16, d_state=8, **ORIGINAL_RECIPE)
    per_step = lambda config: 1000 * config.d_model  # noqa: E731
    plan = growth_runner.Plan(start, [growth_runner.Event(3, "depth", 2), growth_runner.Event(5, "width", 64)], "wsd",
                              total_steps=10, decay_fraction=0.2, rewarm_steps=0, lr_restart=False, lr_width_exponent=0.0,
                              lr=0.002, budget_flops=5 * 32_000 + 2 * 64_000 + 10, eval_every_flops=1e9,
                              fine_every_flops=1e9, fine_margin=0.0)
    runner = growth_runner.Runner(plan, 0, data.train_dataloader(), evalsets, per_step, per_step)
    assert isinstance(runner.trainer, SimpleTrainer) and runner in runner.trainer.callbacks
    trace, _ = runner.run()
    assert runner.step == 7 and runner.flops == 5 * 32_000 + 2 * 64_000  # an eighth step would pass the budget
    assert [p["tag"] for p in trace.points] == ["start", "before_growth", "after_growth", "before_growth",
                                                 "after_growth", "end+final"]
    assert [g["step"] for g in trace.growth] == [3, 5] and len(trace.train_loss) == len(trace.lr) == 7
