"""DIMBALightningModule: a DIMBA, its loss and optimizer, for a Lightning Trainer.

It trains a `dimba.config.Recipe`. `python train.py` builds it from the composed config
(`from_recipe`) and adds the callbacks itself; the Python API's keyword arguments
(`DIMBALightningModule(vocab_size=..., enable_progressive_checkpoints=True, ...)`) become
the same recipe, and the module then brings its own growth and milestone callbacks, so a
plain `Trainer` works.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import lightning as L
import torch

from dimba import internals
from dimba.checkpointing.milestones import format_param_count
from dimba.config.recipe import Recipe
from dimba.growth.apply import apply_growth, apply_sharded_growth
from dimba.growth.sharded import build_sharded
from dimba.growth.dtensor_rows import is_sharded
from dimba.growth.operators import adopt_architecture
from dimba.growth.schedule import GrowthEvent
from dimba.checkpointing.record import CheckpointRecord
from dimba.io.load import recorded_config
from dimba.io.read import open_checkpoint
from dimba.io.writer import model_record
from dimba.model import DIMBA, DIMBAConfig
from dimba.model.denormals import flush_denormals
from dimba.model.params import architecture_parameters, count_parameters
from dimba.training import steps
from dimba.training.fsdp_wrapping import shard_dimba
from dimba.training.loggers import growth_metrics, log_event
from dimba.training.lr_schedule import upgrade_scheduler_state
from dimba.training.validation_bound import ValidationBound, validation_windows

log = logging.getLogger(__name__)


class DIMBALightningModule(L.LightningModule):
    """The Lightning module of a DIMBA. Keyword arguments: see `dimba.config.recipe.OPTIONS`."""

    def __init__(self, vocab_size: Optional[int] = None,
                 model_config: Union[DIMBAConfig, Mapping[str, Any], None] = None, **options: Any) -> None:
        super().__init__()
        flush_denormals()
        recipe = options.pop("recipe", None)
        self._brings_callbacks = recipe is None
        self._own_callbacks: Optional[List[L.Callback]] = None
        if recipe is None:
            recipe = Recipe.from_options(vocab_size, model_config, **options)
        self.recipe: Recipe = recipe
        self.objective = recipe.objective
        # Plain data only: the checkpoint must load with torch.load(weights_only=True).
        self.save_hyperparameters(recipe.as_options())
        self.model = DIMBA(recipe.model)
        if recipe.compile:
            self.model.compile_denoiser()
        self.structure_version = 0  # bumped whenever the parameter set changes (growth)
        self._count_cache: tuple[int, int] = (-1, 0)
        self.growth_history: List[Dict[str, Any]] = []
        self.last_validation_step: Optional[int] = None  # the step the latest val/* metrics belong to
        self.tokenizer_record: Optional[Dict[str, Any]] = None  # None: bytes
        self._shard: Optional[Any] = None  # under trainer=fsdp: how the model is sharded
        self.data_record: Optional[Dict[str, Any]] = None  # the data config, so `dimba eval` finds the split
        self._bound: Optional[ValidationBound] = None
        self._bpb: Optional[Tuple[int, Any]] = None  # (step, BitsPerByte) of the latest val/bpb

    @classmethod
    def from_recipe(cls, recipe: Recipe, tokenizer_record: Optional[Dict[str, Any]] = None,
                    data_record: Optional[Dict[str, Any]] = None) -> "DIMBALightningModule":
        """The module `train.py` builds: the run adds the callbacks (`training_callbacks`).
        `tokenizer_record`: what checkpoints record of the data's tokenizer (None: bytes);
        `data_record`: of the data config (its validation split is what `dimba eval` reads)."""
        module = cls(recipe=recipe)
        module.tokenizer_record = tokenizer_record
        module.data_record = data_record
        return module

    def configure_callbacks(self) -> List[L.Callback]:
        """The plain-Trainer usage (`L.Trainer().fit(module)`): the module brings its growth and milestone callbacks."""
        if not self._brings_callbacks:
            return []
        if self._own_callbacks is None:
            from dimba.training.callbacks import training_callbacks

            self._own_callbacks = training_callbacks(self.recipe)
        return self._own_callbacks

    @property
    def progressive_checkpoint(self) -> Optional[L.Callback]:
        """The milestone callback this module trains with (its manager holds the milestone state)."""
        from dimba.training.callbacks import milestone_callback

        trainer = internals.attached_trainer(self)
        if trainer is not None:
            return milestone_callback(trainer)
        return next((cb for cb in self.configure_callbacks() if hasattr(cb, "manager")), None)

    def parameter_count(self) -> int:
        """Trainable parameters, counted again only after `structure_version` changed.

        Under a parameter-sharding strategy (FSDP) a rank holds only its shards, so the
        count comes from the architecture: full size, and the same number on every rank.
        """
        if self._count_cache[0] != self.structure_version:
            trainer = internals.attached_trainer(self)
            sharded = trainer is not None and internals.shards_parameters(trainer.strategy)
            count = architecture_parameters(self.model.config) if sharded else count_parameters(self)
            self._count_cache = (self.structure_version, count)
        return self._count_cache[1]

    # ----------------------------------------------------------------- growth
    def grow(self, event: GrowthEvent, global_step: int) -> None:
        """Apply one growth event now, carrying the optimizer state into the grown model."""
        before = self.parameter_count()
        trainer = internals.attached_trainer(self)
        optimizer = trainer.optimizers[0] if trainer is not None and trainer.optimizers else None
        seed = steps.growth_seed(self.recipe.seed, event)
        if is_sharded(self.model):  # FSDP2: shard by shard into a new model, no rank holds it whole
            self.model, record = apply_sharded_growth(self.model, event, seed, optimizer, steps.param_group_for)
            if self.recipe.compile:
                self.model.compile_denoiser()
        else:
            record = apply_growth(self.model, event, seed, optimizer, steps.param_group_for)
        self.growth_history.append({**record, "applied_at_step": int(global_step)})
        self.structure_version += 1
        if trainer is not None:
            internals.rewrap_ddp(trainer, self)  # rank 0's weights, broadcast to every rank
            config = self.model.config
            log_event(trainer, growth_metrics(record["params"], config.n_layers, config.d_model), global_step)
        log.info("Grew the model after step %d: %s (%s -> %s parameters)", global_step, event.describe(),
                 format_param_count(before), format_param_count(record["params"]))

    def configure_model(self) -> None:
        """Under `trainer=fsdp` (dimba's FSDP2 strategy): shard the model, one unit per block.
        Resuming a grown run, the model is first built at the checkpoint's shape on the meta
        device, so each rank only ever holds its own shards of it."""
        trainer = internals.attached_trainer(self)
        strategy = trainer.strategy if trainer is not None else None
        if not hasattr(strategy, "data_parallel_mesh") or is_sharded(self.model):
            return
        self._shard = functools.partial(shard_dimba, mesh=strategy.data_parallel_mesh, mp_policy=strategy.mp_policy(),
                                        reshard_after_forward=strategy.reshard_after_forward)
        self._shard(self.model)
        if self.recipe.compile:
            self.model.compile_denoiser()
        self.structure_version += 1

    def adopt_checkpoint_shape(self, path: Path) -> bool:
        """Before a sharded model loads a checkpoint of a grown run: rebuild it at the recorded
        shape on the meta device and give each rank memory for its own shards only (the shards
        then load into it). True if the shape changed (the optimizers must be built anew)."""
        record = open_checkpoint(path, tensors=False)
        recorded = recorded_config(record, path, runtime=self.model.config) if record.architecture else None
        if recorded is None or recorded == self.model.config:
            return False
        reference = next(self.model.parameters())
        self.model = build_sharded(recorded, self._shard, reference.device, reference.dtype)
        if self.recipe.compile:
            self.model.compile_denoiser()
        self.structure_version += 1
        return True

    # ----------------------------------------------------------------- steps
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        loader = self.trainer.train_dataloader
        if hasattr(loader, "mark_trained"):
            loader.mark_trained(batch_idx)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        out = steps.training_loss(self.model, batch, self.objective, self.recipe.seed, self.global_step, self.global_rank)
        self.log("train/loss", out["loss"], prog_bar=True)
        self.log_dict({f"train/{name}": out[name] for name in ("mse", "ce") if name in out})
        if "consistency" in out:
            self.log("train/consistency_loss", out["consistency"])
        self.log("model/params", float(self.parameter_count()))
        return out["loss"]

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        out = steps.validation_loss(self.model, batch, self.objective, batch_idx)
        self.log_dict({f"val/{name}": out[name] for name in ("loss", "mse", "ce") if name in out}, prog_bar=False,
                      sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.last_validation_step = self.global_step
        result = self.validation_bpb()
        if result is not None:
            self.log_dict({"val/bpb": result.bpb, "val/bpb_se": result.bpb_se,
                           "val/bits_per_token": result.bits_per_token}, prog_bar=False)

    # ----------------------------------------------------------------- the likelihood bound
    def validation_bpb(self) -> Optional[Any]:
        """The bound (`dimba.diffusion.bound.BitsPerByte`) of the model as it is now, on the
        fixed validation subset with the fixed noise; None where val/bpb is off or there is
        no validation data of token windows. Every rank computes the same (a sharded model's
        forward needs them all); the latest result is kept for the step it belongs to."""
        if self._bpb is not None and self._bpb[0] == self.global_step:
            return self._bpb[1]
        bound = self._validation_bound()
        if bound is None:
            return None
        started = time.perf_counter()
        with torch.no_grad():
            result = bound.evaluate(self.model)
        self._bpb = (self.global_step, result)
        log.info("val/bpb at step %d: %.4f ± %.4f bits per byte (%.1f s)", self.global_step, result.bpb, result.bpb_se,
                 time.perf_counter() - started)
        return result

    def _validation_bound(self) -> Optional[ValidationBound]:
        settings = self.recipe.validation
        trainer = internals.attached_trainer(self)
        if self._bound is not None or not settings.bpb_sequences or trainer is None:
            return self._bound
        loaders = trainer.val_dataloaders
        dataset = getattr(loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders, "dataset", None)
        try:
            windows = validation_windows(dataset, settings.bpb_sequences)
        except TypeError:  # a dataset without len() or of other items: no bound
            return None
        if windows is None or windows.dim() != 2 or windows.is_floating_point():
            return None
        from dimba.data.records import tokenizer_from_record

        self._bound = ValidationBound(windows, settings.bpb_samples, tokenizer_from_record(self.tokenizer_record),
                                      whole_split=windows.shape[0] == len(dataset))
        return self._bound

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> Dict[str, Any]:
        optimizer = steps.build_optimizer(self.model, self.recipe.optim)
        multiplier = steps.lr_multiplier(self.recipe.optim, self.recipe.growth,
                                         self.recipe.total_steps or self._trainer_total_steps(),
                                         self.recipe.model.d_model)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _trainer_total_steps(self) -> int:
        trainer = internals.attached_trainer(self)
        if trainer is None:
            return 1
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.max_steps
        return int(trainer.estimated_stepping_batches)

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_record(self) -> Dict[str, Any]:
        """What every checkpoint records about the model: enough to rebuild it alone."""
        extra = {} if self.tokenizer_record is None else {"tokenizer": self.tokenizer_record}
        if self.data_record is not None:
            extra["data"] = self.data_record
        return model_record(self.model, self.growth_history, **extra)

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["dimba"] = self.checkpoint_record()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        """Take the checkpoint's (grown) shape before Lightning loads its weights."""
        record = CheckpointRecord(checkpoint)
        if record.architecture is not None:
            recorded = recorded_config(record, "the checkpoint", runtime=self.model.config)
            if recorded.objective != self.model.config.objective:
                raise ValueError(f"the checkpoint was trained with objective={recorded.objective}, this module trains "
                                 f"objective={self.model.config.objective}: a run keeps its objective")
            difference = self.model.config.fixed_difference(recorded)
            if difference:
                raise ValueError(f"the checkpoint was trained with {difference}: a run keeps its recipe")
            if recorded != self.model.config:
                adopt_architecture(self.model, recorded)
                self.structure_version += 1
        self.growth_history = record.growth_history
        for state in checkpoint.get("lr_schedulers") or []:
            upgrade_scheduler_state(state)
