"""The tensors of a DIMBA, computed from its architecture alone (no torch): names and shapes.

The one owner of "what parameters does this architecture have": the parameter count that
milestones, the plan and exports use, the memory plan and growth's rules all read it; a
test checks it against a model built on the meta device.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Tuple

if TYPE_CHECKING:
    from dimba.model.config import DIMBAConfig

Shape = Tuple[int, ...]
LEARNED_SCHEDULE_SEGMENTS = 32  # dimba.diffusion.schedule.LearnedSchedule.SEGMENTS (a test checks they agree)


def block_shapes(cfg: "DIMBAConfig") -> Dict[str, Shape]:
    """The parameters of one Mamba-2 block, by name inside the block, in module order."""
    d, di, n, h = cfg.d_model, cfg.expand * cfg.d_model, cfg.d_state, cfg.expand * cfg.d_model // cfg.head_dim
    directions = 2 if cfg.bidirectional else 1
    conv = di + 2 * n
    shapes: Dict[str, Shape] = {"norm.weight": (d,)}
    if cfg.time_conditioned:
        shapes.update({"modulation.weight": (2 * d, d), "modulation.bias": (2 * d,)})
    shapes["mixer.in_proj.weight"] = (di + conv + h, d)
    for k in range(directions):
        shapes[f"mixer.convs.{k}.weight"] = (conv, 1, cfg.d_conv)
        shapes[f"mixer.convs.{k}.bias"] = (conv,)
    shapes.update({
        "mixer.dt_bias": (directions, h),
        "mixer.A_log": (directions, h),
        "mixer.D": (directions, h),
        "mixer.norm.weight": (di,),
        "mixer.out_proj.weight": (d, di),
    })
    return shapes


def parameter_shapes(cfg: "DIMBAConfig") -> Dict[str, Shape]:
    """Every parameter of the model, by its name in `DIMBA.named_parameters()` order."""
    d, e, t = cfg.d_model, cfg.d_embed, cfg.d_time
    shapes: Dict[str, Shape] = {
        "embedding.weight": (cfg.embedding_rows, e),
        "in_proj.weight": (d, e * (2 if cfg.self_condition else 1)),  # [x_t | previous x0 estimate]
        "in_proj.bias": (d,),
    }
    if cfg.time_conditioned:
        shapes.update({"time_mlp.0.weight": (d, t), "time_mlp.0.bias": (d,), "time_mlp.2.weight": (d, d),
                       "time_mlp.2.bias": (d,)})
    for i in range(cfg.n_layers):
        shapes.update({f"blocks.{i}.{name}": shape for name, shape in block_shapes(cfg).items()})
    shapes.update({"norm_f.weight": (d,), "out_proj.weight": (e, d), "out_proj.bias": (e,)})
    if cfg.noise_schedule == "learned":
        shapes["schedule.warp"] = (LEARNED_SCHEDULE_SEGMENTS,)
    return shapes


def numel(shape: Shape) -> int:
    return math.prod(shape)


def parameter_count(cfg: "DIMBAConfig") -> int:
    return sum(numel(s) for s in parameter_shapes(cfg).values())
