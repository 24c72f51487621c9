"""The growth experiment (`bench/growth_experiment.py`) as its user drives it: recipe
names on the command line are refused early and in one line when malformed, every name it has
recorded reads back as itself, and its committed summary is exactly what its runs files give."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from hydra import compose, initialize_config_dir

from dimba.config import register_configs, validate

BENCH = Path(__file__).resolve().parents[1] / "bench"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

import growth_analysis  # noqa: E402
import growth_experiment  # noqa: E402
from growth_recipes import DEFAULT_RECIPE, NAME_FORM, parse_recipe  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def committed_runs() -> List[Dict[str, Any]]:
    return list(growth_experiment.load_runs().values())


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """`report` on the committed runs, once for the tests that read it: the runs, the summary,
    and the recipe each phase's plot was drawn for (plotting itself is skipped)."""
    plotted: Dict[str, str] = {}
    records = committed_runs()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(growth_analysis, "plot", lambda records, recipe, phase, key, path: plotted.update({phase: recipe}))
        summary = growth_analysis.write_report(records, tmp_path_factory.mktemp("report"))
    return {"records": records, "summary": summary, "plotted": plotted}


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
    ("depth-stack@1.5|wsd|h0.6", "depth-stack needs 1 increasing growth fraction in"),
    ("dw@0.25,0.5,0.75|wsd|h0", "positive"),
    ("dw@0.25,0.5,0.75|wsd+lr-0.1|h0.6", "positive"),
    ("dw@0.25,0.5,0.75|wsd+lr0.002|h0.6", "not canonical (did you mean 'dw@0.25,0.5,0.75|wsd|h0.6'?)"),
    ("dw@0.25,0.5,0.75|wsd+wlr1+rewarm10|h0.6", "not canonical"),
    # what the trainers' own checks refuse (it used to fail inside the run, after the baselines)
    ("dw@0.25,0.5,0.75|wsd+rewarm-5|h0.6", "growth.rewarm_steps=-5 cannot be used"),
    ("dw@0.25,0.5,0.75|wsd+df1.5|h0.6", "optim.decay_fraction=1.5 cannot be used"),
    ("dw@0.25,0.5,0.75|wsd+wlr3|h0.6", "growth.lr_width_exponent=3.0 cannot be used"),
    ("dw@0.25,0.5,0.75|constant+restart|h0.6", "growth.lr_restart=True cannot be used"),
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
    (["grid", "--recipes", "top:3@inf"], "--recipes item 'top:3@inf'"),
    (["grid", "--recipes", "top:3@0.60"], "--recipes item 'top:3@0.60'"),  # names the h0.6 runs already done
    (["grid", "--seeds", "10,x"], "--seeds '10,x'"),
    (["grid", "--runs", "runs.jsonl"], "--runs 'runs.jsonl'"),
])
def test_the_command_line_refuses_bad_input_before_anything_trains(
        args: List[str], field: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def must_not_train(*_: Any, **__: Any) -> None:
        raise AssertionError("a bad argument reached training")

    monkeypatch.setattr(growth_experiment, "run_phase", must_not_train)
    monkeypatch.setattr(sys, "argv", ["growth_experiment.py", *args])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # not the 1 main() would set, so a call it makes shows
    try:
        with pytest.raises(SystemExit) as exit_:
            growth_experiment.main()
        assert torch.get_num_threads() == 2  # refused before it set anything up
    finally:
        torch.set_num_threads(threads)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert field in last and "accepted" in last and "Traceback" not in last


def test_the_committed_summary_is_what_the_runs_files_give(report: Dict[str, Any]) -> None:
    summary = json.loads(json.dumps(report["summary"]))
    committed = json.loads((RESULTS / "growth_experiment.json").read_text(encoding="utf-8"))
    assert summary == committed["summary"]
    assert set(committed["runs"]) == {r["key"] for r in report["records"]}
    assert report["plotted"] == {phase: row["best"] for phase, row in summary.items()
                                 if isinstance(row, dict) and row.get("best")}


def test_a_confirmation_picks_its_best_on_the_select_split_never_on_the_figure(report: Dict[str, Any]) -> None:
    """confirm+lr ran recipes its grid did not choose. Without the later growth (which leads on
    both splits), its best on the report split (the figure) is `h0.5`, but the one chosen is
    the select split's."""
    summary, records = report["summary"], report["records"]
    phase = summary["confirm+lr"]
    assert summary["grid+lr"]["best"] not in {row["recipe"] for row in phase["table"]}
    assert phase["best"] == growth_analysis.best_recipe(records, "confirm+lr", "select@best") == DEFAULT_RECIPE
    earlier = [r for r in records if r["recipe"]["name"] != DEFAULT_RECIPE]
    first_on_figure = growth_analysis.table(earlier, "confirm+lr", "report@best")[0]["recipe"]
    assert first_on_figure == "dw@0.25,0.5,0.75|wsd+wlr1+lr0.004|h0.5"
    assert growth_analysis.best_recipe(earlier, "confirm+lr", "select@best") != first_on_figure


def test_the_default_recipe_is_what_python_train_py_growth_early_runs() -> None:
    """The experiment's best recipe in the surrogate (a tie on the select split keeps it) must
    stay what `growth=early` (the default until the frontier was measured in bits) and the
    optim defaults do at the experiment's sizes."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        config = validate(compose("config", overrides=["growth=early"]))
    recipe, growth, optim = parse_recipe(DEFAULT_RECIPE), config.growth, config.optim
    assert (recipe.schedule, recipe.lr, recipe.decay_fraction) == (optim.schedule, optim.lr, optim.decay_fraction)
    assert (recipe.rewarm_steps, recipe.lr_restart, recipe.lr_width_exponent) == (
        growth.rewarm_steps, growth.lr_restart, growth.lr_width_exponent)
    max_steps = config.trainer.max_steps
    assert tuple(event.step / max_steps for event in growth.schedule) == recipe.at
    assert [event.op for event in growth.schedule] == ["depth", "width", "width"] and recipe.ops == "dw"


def test_a_tie_on_the_select_split_keeps_the_default(report: Dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The former default (25/50/75%) and its `+lr0.004` tie exactly on the select split (mean
    0.568): whichever is the default is kept; a change of default needs a better figure."""
    earlier = [r for r in report["records"] if r["recipe"]["name"] != DEFAULT_RECIPE]
    former, faster = "dw@0.25,0.5,0.75|wsd+wlr1|h0.6", "dw@0.25,0.5,0.75|wsd+wlr1+lr0.004|h0.6"
    select = {row["recipe"]: row["mean"] for row in growth_analysis.table(earlier, "confirm+lr", "select@best")}
    assert select[former] == select[faster] == min(select.values())
    for default in (former, faster):
        monkeypatch.setattr(growth_analysis, "DEFAULT_RECIPE", default)
        assert growth_analysis.best_recipe(earlier, "confirm+lr", "select@best") == default


def test_pack_folds_new_runs_files_into_the_archive_and_reads_back_the_same_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(growth_experiment, "RESULTS", tmp_path)
    monkeypatch.setattr(growth_experiment, "ARCHIVE", tmp_path / "growth_experiment_runs.jsonl.xz")
    growth_experiment.append_run({"key": "a", "x": 1}, tmp_path / "growth_experiment_runs.jsonl")
    growth_experiment.append_run({"key": "b", "x": 2}, tmp_path / "growth_experiment_runs_two.jsonl")
    growth_experiment.pack()
    growth_experiment.append_run({"key": "a", "x": 3}, tmp_path / "growth_experiment_runs.jsonl")  # a rerun: it wins
    assert growth_experiment.load_runs() == {"a": {"key": "a", "x": 3}, "b": {"key": "b", "x": 2}}
    growth_experiment.pack()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["growth_experiment_runs.jsonl.xz"]
    assert growth_experiment.load_runs() == {"a": {"key": "a", "x": 3}, "b": {"key": "b", "x": 2}}
