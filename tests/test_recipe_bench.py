"""What `bench/recipe.py` compares the continuous recipe against, and the names it accepts."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import recipe_report  # noqa: E402
from conftest import HANG_GUARD_S  # noqa: E402


def _run(arm: str, bpb: float, budget: float = 1.0, lr: float = 4e-3) -> dict:
    record = {"corpus": "builtin", "objective": "ar", "budget": budget, "lr": lr, "heldout": {"report": {"bpb": bpb}}}
    return {**record, "variant": arm} if arm != "ar" else record


def test_the_ar_yardstick_is_the_plain_arm_at_the_same_budget_and_rate():
    runs = {str(i): r for i, r in enumerate([
        _run("ar", 1.5), _run("ar", 1.4),
        _run("ar[growth=default]", 1.25),  # grown at another time: not the yardstick
        _run("ar", 1.2, budget=4.0),       # another budget
        _run("ar", 1.9, lr=1e-3),          # a rate the grid did not choose
    ])}
    assert recipe_report.ar_figures(runs, 1.0, 4e-3) == [1.5, 1.4]


def test_a_name_that_is_not_a_variant_stops_before_any_training():
    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "recipe.py"), "run", *args],
                             capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert out.returncode != 0
        return out.stderr.strip().splitlines()[-1]

    assert "unknown variant 'nope'" in run("--variants", "bayes+nope")
    assert "--samples/--tune name best, not among --variants (original)" in run("--variants", "original",
                                                                                  "--samples", "best")
