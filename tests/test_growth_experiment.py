"""The growth experiment (`bench/growth_experiment.py`, issue 16) as its user drives it: recipe
names on the command line are refused early and in one line when malformed, every name it has
recorded reads back as itself, and its committed summary is exactly what its runs files give."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import growth_analysis  # noqa: E402
import growth_experiment  # noqa: E402
from growth_recipes import NAME_FORM, parse_recipe  # noqa: E402


def committed_runs() -> List[Dict[str, Any]]:
    return list(growth_experiment.load_runs().values())


def test_every_recorded_recipe_name_parses_back_to_itself() -> None:
    names = {r["recipe"]["name"] for r in committed_runs()}
    assert len(names) > 30  # the grids, the confirmations and their baselines
    for name in names:
        assert parse_recipe(name).name == name


@pytest.mark.parametrize("name, part", [
    ("dw@0.25,0.5,0.75|wsd", "three fields"),
    ("grow@0.25,0.5,0.75|wsd|h0.6", "unknown ops 'grow'"),
    ("dw@0.25,0.5,0.75|linear|h0.6", "unknown schedule 'linear'"),
    ("dw@0.25,0.5,0.75|wsd+warm10|h0.6", "unknown schedule option 'warm10'"),
    ("dw@0.25,0.5,0.75|wsd+restart5|h0.6", "unknown schedule option 'restart5'"),
    ("dw@0.25,0.5,0.75|wsd+lrfast|h0.6", "not a number"),
    ("dw@0.25,0.5|wsd|h0.6", "dw needs 3 increasing growth fractions"),
    ("dw@0.5,0.25,0.75|wsd|h0.6", "dw needs 3 increasing growth fractions"),
    ("depth-stack@1.5|wsd|h0.6", "depth-stack needs 1 increasing growth fractions"),
    ("dw@0.25,0.5,0.75|wsd|h0", "positive"),
    ("dw@0.25,0.5,0.75|wsd+lr-0.1|h0.6", "positive"),
    ("dw@0.25,0.5,0.75|wsd+lr0.002|h0.6", "not canonical (did you mean 'dw@0.25,0.5,0.75|wsd|h0.6'?)"),
    ("dw@0.25,0.5,0.75|wsd+wlr1+rewarm10|h0.6", "not canonical"),
])
def test_a_malformed_recipe_name_is_refused_naming_the_part_and_the_form(name: str, part: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_recipe(name)
    message = str(error.value)
    assert message.startswith(f"recipe {name!r}: ") and part in message and message.endswith(NAME_FORM)
    assert "\n" not in message


@pytest.mark.parametrize("args, field", [
    (["grid", "--recipes", "all;dw@0.25,0.5|wsd|h0.6"], "--recipes: recipe 'dw@0.25,0.5|wsd|h0.6'"),
    (["grid", "--recipes", "top:0"], "--recipes item 'top:0'"),
    (["grid", "--recipes", "top:3@0.6,x"], "--recipes item 'top:3@0.6,x'"),
    (["confirm", "--scratch-lrs", "0.002,fast"], "--scratch-lrs '0.002,fast'"),
    (["confirm", "--scratch-schedules", "cosine,linear"], "--scratch-schedules 'cosine,linear'"),
    (["grid", "--runs", "runs.jsonl"], "--runs 'runs.jsonl'"),
])
def test_the_command_line_refuses_bad_input_before_anything_trains(
        args: List[str], field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def must_not_train(*_: Any, **__: Any) -> None:
        raise AssertionError("a bad argument reached training")

    monkeypatch.setattr(growth_experiment, "run_phase", must_not_train)
    monkeypatch.setattr(sys, "argv", ["growth_experiment.py", *args])
    with pytest.raises(SystemExit) as exit_:
        growth_experiment.main()
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert field in last and "accepted" in last and "Traceback" not in last


def test_the_committed_summary_is_what_the_runs_files_give(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plotted: Dict[str, str] = {}
    monkeypatch.setattr(growth_analysis, "plot", lambda records, recipe, phase, key, path: plotted.update({phase: recipe}))
    records = committed_runs()
    summary = json.loads(json.dumps(growth_analysis.write_report(records, tmp_path)))
    committed = json.loads((RESULTS / "growth_experiment.json").read_text(encoding="utf-8"))
    assert summary == committed["summary"]
    assert {run["key"] for run in committed["runs"]} == {r["key"] for r in records}
    assert plotted == {phase: row["best"] for phase, row in summary.items() if isinstance(row, dict) and row.get("best")}


def test_a_confirmation_picks_its_best_on_the_select_split_never_on_the_figure(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """confirm+lr ran recipes its grid did not choose; its best on the report split (the figure)
    is `h0.5`, but the one it reports as best is chosen on the select split."""
    monkeypatch.setattr(growth_analysis, "plot", lambda *_: None)
    records = committed_runs()
    summary = growth_analysis.write_report(records, tmp_path)
    phase = summary["confirm+lr"]
    assert summary["grid+lr"]["best"] not in {row["recipe"] for row in phase["table"]}
    assert phase["best"] == growth_analysis.best_recipe(records, "confirm+lr", "select@best")
    assert phase["best"] != phase["table"][0]["recipe"]  # the report split's first: not chosen
