"""`python scripts/interactive_setup.py`, driven through piped standard input."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dimba.config import register_configs, validate
from conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "interactive_setup.py"
register_configs()


@pytest.fixture
def conf(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def session(conf: Path, *answers: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--conf-dir", str(conf)], input="\n".join(answers) + "\n",
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def composed_milestones(conf: Path, preset: str):
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return validate(compose("config", overrides=[f"progressive_checkpoints={preset}"])).progressive_checkpoints


def test_setup_writes_a_preset_that_train_py_uses(conf):
    result = session(conf, "1", "n", "abc", "1,5,10,30", "", "bad name!", "seedlike", "3")
    assert result.returncode == 0, result.stderr
    assert "✗ 'abc' is not a parameter count" in result.stdout  # re-prompted with the reason
    assert "is not a preset name" in result.stdout
    assert "python train.py progressive_checkpoints=seedlike" in result.stdout
    preset = composed_milestones(conf, "seedlike")
    assert preset.milestones == [10**9, 5 * 10**9, 10 * 10**9, 30 * 10**9]
    assert preset.save_dir == "progressive_checkpoints" and preset.enabled


def test_an_answer_that_is_neither_yes_nor_no_is_asked_again_not_taken_as_no(conf):
    result = session(conf, "1", "sure", "y", "billions", "100M,1B", "", "billions", "ok", "y", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("answer y or n") == 2  # 'sure' and 'ok', each asked again
    assert composed_milestones(conf, "billions").milestones == [10**8, 10**9]


def test_continuing_from_a_preset_never_overwrites_silently(conf):
    target = conf / "progressive_checkpoints" / "billions.yaml"
    before = target.read_text()
    refused = session(conf, "1", "y", "nosuch", "billions", "100M,1B", "", "billions", "n", "3")
    assert "no preset 'nosuch'" in refused.stdout and "Nothing written." in refused.stdout
    assert target.read_text() == before

    accepted = session(conf, "1", "y", "billions", "100M,1B", "elsewhere", "billions", "y", "3")
    assert accepted.returncode == 0, accepted.stderr
    preset = composed_milestones(conf, "billions")
    assert preset.milestones == [10**8, 10**9] and preset.save_dir == "elsewhere"


def test_an_update_retells_the_milestones_in_comments_and_keeps_the_others(conf):
    target = conf / "progressive_checkpoints" / "billions.yaml"
    target.write_text("# Keep save_dir on the shared filesystem of the cluster.\n" + target.read_text())
    result = session(conf, "1", "y", "billions", "100M,1.5B", "", "billions", "y", "3")
    assert result.returncode == 0, result.stderr
    text = target.read_text()
    assert "# Milestones: 100M, 1.5B." in text  # the header follows the values
    assert "milestones: [100000000, 1500000000]  # 100M, 1.5B\n" in text  # and so does the inline comment
    assert "30B" not in text
    assert text.startswith("# Keep save_dir on the shared filesystem of the cluster.\n")  # other comments stay
    assert composed_milestones(conf, "billions").milestones == [10**8, 15 * 10**8]


@pytest.mark.parametrize("written, counts", [
    ("[1M, 2M, 4M]", [10**6, 2 * 10**6, 4 * 10**6]),  # the default millions preset
    ("[1.5B, 3B]", [15 * 10**8, 3 * 10**9]),
    ("[1e9, 5e9]", [10**9, 5 * 10**9]),
    ("[500, 1000000]", [500, 10**6]),  # bare numbers in YAML are raw counts, even below 1K
], ids=["suffix", "decimal-suffix", "exponent", "raw-ints"])
def test_continuing_from_a_preset_takes_every_milestone_form_it_may_hold(conf, written, counts):
    (conf / "progressive_checkpoints" / "start.yaml").write_text(
        f"defaults:\n  - base_progressive_checkpoints\n  - _self_\n\nenabled: true\nmilestones: {written}\n")
    result = session(conf, "1", "y", "start", "", "", "continued", "3")  # keep the preset's milestones
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert composed_milestones(conf, "continued").milestones == counts


def test_a_preset_whose_milestones_cannot_be_read_is_asked_again_with_the_reason(conf):
    (conf / "progressive_checkpoints" / "broken.yaml").write_text("enabled: true\nmilestones: [1M, lots]\n")
    result = session(conf, "1", "y", "broken", "millions", "", "", "fromdefault", "3")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "✗ broken.yaml: milestones: 'lots' is not a parameter count" in result.stdout
    assert composed_milestones(conf, "fromdefault").milestones == [10**6, 2 * 10**6, 4 * 10**6]


def test_view_lists_checkpoints_under_a_directory(conf, tmp_path, tiny_model_config):
    from dimba.model import DIMBA
    from dimba.utils.checkpointing import ProgressiveCheckpointManager

    run = tmp_path / "outputs" / "2026-01-01" / "10-00-00"
    ProgressiveCheckpointManager([1000], run / "progressive_checkpoints").save_checkpoint(
        DIMBA(tiny_model_config), global_step=7, metadata={"train/loss": 1.25})
    result = session(conf, "2", str(tmp_path / "outputs"), "3")
    assert result.returncode == 0, result.stderr
    assert "1.0K" in result.stdout and "checkpoint_1.0K_step_7.pt" in result.stdout and "1.25" in result.stdout


def test_end_of_input_and_ctrl_c_exit_cleanly(conf):
    result = session(conf, "1", "y")  # input ends mid-dialogue
    assert result.returncode == 0 and "Exiting interactive setup." in result.stdout
    assert "Traceback" not in result.stderr

    process = subprocess.Popen([sys.executable, str(SCRIPT), "--conf-dir", str(conf)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # waiting at the menu prompt
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 0 and "Exiting interactive setup." in out and "Traceback" not in err


def test_presets_the_setup_writes_stay_out_of_git_and_the_shipped_ones_in():
    """The setup writes into the repository's conf/ (where Hydra finds presets); .gitignore
    keeps the user's presets out of `git status`, never the ones dimba ships."""
    if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git work tree")

    def ignored(name: str) -> bool:
        path = f"conf/progressive_checkpoints/{name}.yaml"
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0

    shipped = sorted(p.stem for p in (ROOT / "conf" / "progressive_checkpoints").glob("*.yaml")
                     if subprocess.run(["git", "ls-files", "--error-unmatch", str(p)], cwd=ROOT,
                                       capture_output=True).returncode == 0)
    assert shipped and not any(ignored(name) for name in shipped)
    assert ignored("my_milestones")
