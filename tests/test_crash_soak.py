"""SIGKILL at random moments, in the middle of saves too, then resume: nothing lost, nothing twice."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    return soak


@pytest.mark.slow
def test_twenty_kills_lose_nothing_and_save_each_milestone_once(tmp_path):
    result = load_soak().soak(tmp_path, kills=20, seed=1)
    assert result["kills"] == 20, result
    assert result["kills_during_a_save"] >= 1, result
    assert result["milestones_saved"] == result["milestones_crossed"], result
    assert result["each_saved_once"] and result["all_statuses_ok"], result
    assert result["temporaries_left"] == [] and result["last_step"] == result["max_steps"] == 100, result


@pytest.mark.slow
def test_kills_with_background_milestone_writes_lose_nothing_and_repeat_nothing(tmp_path):
    result = load_soak().soak(tmp_path, kills=10, seed=2, async_save=True)
    assert result["kills"] == 10, result
    assert result["milestones_saved"] == result["milestones_crossed"], result
    assert result["each_saved_once"] and result["all_statuses_ok"], result
    assert result["temporaries_left"] == [] and result["last_step"] == result["max_steps"] == 50, result
