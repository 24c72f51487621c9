"""`trainer=fsdp`: FSDP2 through Lightning's ModelParallelStrategy, data parallel over every
process, one shard unit per Mamba-2 block (`DIMBALightningModule.configure_model` calls
`dimba.training.fsdp_wrapping.shard_dimba`). This module is the Lightning strategy; `fsdp_wrapping` is the
wrapping of the model itself, which the sharded growth reuses without Lightning.

Parameters, gradients and AdamW state are DTensor shards: a rank holds 1/world of each.
The model grows shard by shard (`dimba.growth.apply.apply_sharded_growth`). Checkpoints are
Distributed Checkpoint directories that every rank writes its shards into: `last.ckpt/` is
written into a temporary directory and swapped in whole; milestones are published by the
milestone writer, synchronously or (`progressive_checkpoints.async_save`) in the background
through `torch.distributed.checkpoint.async_save`. Runs on GPUs (nccl, with a gloo group
for the background saves) and on CPU processes (gloo): `trainer=fsdp trainer.accelerator=cpu`.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from dimba import internals
from dimba.training.directory_swap import WholeDirectorySaves

METADATA_FILE = "meta.pt"  # what Lightning's sharded checkpoints keep beside the shards


class FSDPStrategy(WholeDirectorySaves, ModelParallelStrategy):
    """FSDP2 over all ranks (no tensor parallelism). `mixed_precision: bf16` keeps fp32 master
    weights and computes in bf16 through FSDP2's MixedPrecisionPolicy."""

    def __init__(self, mixed_precision: Optional[str] = None, reshard_after_forward: bool = True, **kwargs: Any) -> None:
        if mixed_precision not in (None, "bf16", "fp16"):
            raise ValueError(f"trainer.strategy.mixed_precision: {mixed_precision!r} is invalid; accepted: null | bf16 | fp16")
        super().__init__(tensor_parallel_size=1, save_distributed_checkpoint=True, **kwargs)
        self.mixed_precision = mixed_precision
        self.reshard_after_forward = reshard_after_forward
        self.checkpoint_group: Optional[Any] = None
        self._writer: Optional[ThreadPoolExecutor] = None  # one thread: background sharded writes

    def setup_environment(self) -> None:
        internals.model_parallel_data_only(self)  # every rank in the data-parallel dimension
        super().setup_environment()
        import torch.distributed as dist

        self.checkpoint_group = dist.new_group(backend="gloo")  # background saves never share the training group

    @property
    def data_parallel_mesh(self) -> Any:
        return self.device_mesh["data_parallel"]

    def mp_policy(self) -> Optional[Any]:
        if self.mixed_precision is None:
            return None
        from torch.distributed.fsdp import MixedPrecisionPolicy

        dtype = torch.bfloat16 if self.mixed_precision == "bf16" else torch.float16
        return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: Optional[bool] = None) -> Dict[str, Any]:
        """A checkpoint of a grown run loads into a model of its shape: the module rebuilds its
        sharded model at the recorded architecture first, and the optimizers follow it."""
        path = Path(self.broadcast(checkpoint_path))
        adopt = getattr(self.lightning_module, "adopt_checkpoint_shape", None)
        if callable(adopt) and adopt(path):
            self.setup_optimizers(self.lightning_module.trainer)
        return super().load_checkpoint(path, weights_only)

    def async_save_shards(self, checkpoint: Dict[str, Any], directory: Path) -> Tuple[threading.Event, Future]:
        """Write `checkpoint` into `directory` as `save_shards` would, in the background, and
        return at once: (set once this rank's shards are staged in host memory, the write's
        future). Every rank calls it; Distributed Checkpoint's planning, staging and writing
        run in this rank's writer thread over the checkpoint process group, so the training
        thread only waits for the staging, before the next optimizer step changes the weights."""
        import torch.distributed.checkpoint as dcp

        directory = Path(directory)
        converted = {"state_dict": checkpoint.pop("state_dict")}
        converted.update({f"optimizer_{i}": state for i, state in enumerate(checkpoint.pop("optimizer_states", []))})
        if self.is_global_zero:
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, directory / METADATA_FILE)
        staged, written = threading.Event(), Future()

        def write() -> None:
            try:
                try:
                    pending = dcp.async_save(converted, checkpoint_id=str(directory), process_group=self.checkpoint_group)
                finally:
                    staged.set()
                written.set_result(pending.result())
            except BaseException as exc:
                written.set_exception(exc)

        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dimba-shard-writer")
        self._writer.submit(write)
        return staged, written

    def teardown(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        super().teardown()
