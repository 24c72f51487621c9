"""GrowableAdamW's birth steps: exact per-entry step counts at the cost of a row and a column."""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch

from dimba.growth.operators import grow_depth, grow_width
from dimba.growth.optim import GrowableAdamW, births, entry_steps, transfer_optimizer_state
from dimba.model import DIMBA, DIMBAConfig

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(d_model=32, n_layers=2, d_state=8, head_dim=16, d_embed=16, d_time=16, chunk_size=8, diffusion_steps=100)


def steps(model, optimizer, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        optimizer.zero_grad()
        tokens = torch.randint(0, 256, (2, 16), generator=g)
        t = torch.randint(1, 100, (2,), generator=g)
        noise = torch.randn(2, 16, 16, generator=g, dtype=torch.float64)
        model.loss(tokens, t=t, noise=noise)["loss"].backward()
        optimizer.step()


def as_per_entry_counts(optimizer):
    """The state as dimba wrote it before birth steps: a step tensor the shape of each parameter."""
    for p, state in optimizer.state.items():
        state["step"] = entry_steps(optimizer, p)
        for d in range(len(births(state))):
            del state[f"born_{d}"]


def grow(model, optimizer, event):
    remaps = event(model)
    transfer_optimizer_state(optimizer, remaps, model, lambda p: 0)


def test_birth_steps_count_and_step_as_per_entry_step_tensors_would():
    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(**SHAPE)).double()
    legacy = copy.deepcopy(model)
    optimizer = GrowableAdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    legacy_optimizer = GrowableAdamW(legacy.parameters(), lr=1e-2, weight_decay=0.1)
    steps(model, optimizer, 3, seed=0)
    steps(legacy, legacy_optimizer, 3, seed=0)
    as_per_entry_counts(legacy_optimizer)
    events = [lambda m: grow_width(m, 64, seed=1), lambda m: grow_depth(m, 3, seed=2), lambda m: grow_width(m, 96, seed=3)]
    for k, event in enumerate(events):
        grow(model, optimizer, event)
        grow(legacy, legacy_optimizer, event)
        steps(model, optimizer, 2 + k, seed=10 + k)
        steps(legacy, legacy_optimizer, 2 + k, seed=10 + k)
    ages = set()
    for p, q in zip(model.parameters(), legacy.parameters()):
        assert torch.equal(entry_steps(optimizer, p), entry_steps(legacy_optimizer, q))  # carried alike
        ages |= set(entry_steps(optimizer, p).unique().tolist())
    assert ages == {12.0, 9.0, 7.0, 4.0}  # original entries; born at the first widening, in new blocks, at the second

    twin = copy.deepcopy(model)  # one step from the same state, counted both ways, moves alike
    twin_optimizer = GrowableAdamW(twin.parameters(), lr=1e-2, weight_decay=0.1)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # its tensors, not shared
    as_per_entry_counts(twin_optimizer)
    steps(model, optimizer, 1, seed=99)
    steps(twin, twin_optimizer, 1, seed=99)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-5 * 1e-2)  # within 1e-5 of a step (lr): float32 vs float64 corrections
    born = sum(b.numel() for p in model.parameters() for b in births(optimizer.state[p]))
    assert born < 0.05 * sum(p.numel() for p in model.parameters())  # rows and columns, not entries


def test_birth_steps_stay_float32_when_the_state_loads_onto_bf16_weights():
    param = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.bfloat16))
    optimizer = GrowableAdamW([param])
    optimizer.state[param] = {**GrowableAdamW.fresh_state(param), "step": torch.tensor(6003.0),
                              "born_0": torch.tensor([0.0, 6001.0])}
    saved = copy.deepcopy(optimizer.state_dict())
    other = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.bfloat16))
    loaded = GrowableAdamW([other])
    loaded.load_state_dict(saved)
    assert loaded.state[other]["born_0"].dtype == torch.float32  # bf16 would round 6001 to 6016
    assert loaded.state[other]["born_0"].tolist() == [0.0, 6001.0]
    assert entry_steps(loaded, other)[:, 0].tolist() == [6003.0, 2.0]


def test_growth_draws_new_entries_from_its_seed_and_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    model = DIMBA(DIMBAConfig(**SHAPE))
    twin, other = copy.deepcopy(model), copy.deepcopy(model)
    state = torch.get_rng_state()
    grow_width(model, 64, seed=7)
    grow_depth(model, 4, seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    grow_width(twin, 64, seed=7)
    grow_depth(twin, 4, seed=8)
    grow_width(other, 64, seed=9)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))
    new = model.blocks[0].mixer.in_proj.weight[:, 32:]
    assert not torch.equal(new, other.blocks[0].mixer.in_proj.weight[:, 32:])
    bound = 1 / 64**0.5  # nn.Linear's initialisation range for the new fan-in
    assert new.abs().max() <= bound and new.std() > bound / 3


def imports(path: Path) -> set:
    """dimba modules a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dimba"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dimba")}
    return found


def test_growth_modules_import_in_one_direction_and_never_upward():
    modules = {f"dimba.growth.{p.stem}": imports(p) for p in (ROOT / "dimba" / "growth").glob("*.py") if p.stem != "__init__"}
    for name, deps in modules.items():
        assert not {d for d in deps if d.split(".")[1] in ("training", "config", "run", "cli", "io", "data")}, name
    state = {}

    def visit(name, trail):
        assert state.get(name) != "open", f"import cycle: {' -> '.join(trail + [name])}"
        if state.get(name) is None:
            state[name] = "open"
            for dep in modules.get(name, ()):
                visit(dep, trail + [name])
            state[name] = "done"

    for name in modules:
        visit(name, [])
    assert "dimba.growth.operators" not in modules["dimba.growth.optim"]
    assert "dimba.growth.optim" not in modules["dimba.growth.unsharded"]


@pytest.mark.parametrize("name", ["DepthMode", "Remap", "grow_depth", "grow_width", "grow_to", "adopt_architecture",
                                  "apply_growth"])
def test_operator_names_are_importable_where_they_were(name):
    import dimba.growth.operators as operators

    assert callable(getattr(operators, name)) or isinstance(getattr(operators, name), type)
