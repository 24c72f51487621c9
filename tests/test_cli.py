"""The `dimba` command as a user runs it, on a real tiny run that grew while it trained.

Most commands run in-process through `main(argv)` (same code path, no interpreter start);
three subprocesses cover what only a fresh interpreter shows: `list` imports no torch,
`python -m dimba.cli.main` works as the console command, and a load error stays one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from conftest import HANG_GUARD_S, ROOT, TINY_MODEL
from dimba.cli.main import main
from dimba.training import DIMBALightningModule

GROWTH = [{"step": 2, "op": "depth", "n_layers": 2}, {"step": 4, "op": "width", "d_model": 48}]
MILESTONES = [20_000, 40_000, 10**9]  # 16.6K -> 26.4K at step 2 -> 50.7K at step 4


def make_run(run_dir: Path) -> None:
    """A run directory as train.py lays it out: logs/metrics.csv, checkpoints/last.ckpt,
    progressive_checkpoints/*.pt + *.json."""
    generator = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (6 * 4, 32), generator=generator)
    module = DIMBALightningModule(
        vocab_size=256, model_config=TINY_MODEL, warmup_steps=0, growth_schedule=GROWTH,
        enable_progressive_checkpoints=True, progressive_milestones=MILESTONES,
        progressive_save_dir=str(run_dir / "progressive_checkpoints"),
    )
    trainer = L.Trainer(
        max_steps=6, accelerator="cpu", devices=1, log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(run_dir),
        logger=CSVLogger(save_dir=str(run_dir), name="logs", version=""),
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """outputs/<date>/<time>/ (one run) and outputs/multirun/<date>/<time>/{0,1}/ (copies),
    job 1 with an unreadable sidecar."""
    root = tmp_path_factory.mktemp("cli") / "outputs"
    run = root / "2026-01-01" / "10-00-00"
    make_run(run)
    for job in ("0", "1"):
        shutil.copytree(run, root / "multirun" / "2026-01-02" / "11-00-00" / job)
    broken = root / "multirun" / "2026-01-02" / "11-00-00" / "1" / "progressive_checkpoints" / "checkpoint_40.0K_step_4.json"
    broken.write_text("{not json", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def run_dir(outputs) -> Path:
    return outputs / "2026-01-01" / "10-00-00"


@pytest.fixture(scope="module")
def milestone(run_dir) -> Path:
    return run_dir / "progressive_checkpoints" / "checkpoint_40.0K_step_4.pt"


def cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=HANG_GUARD_S, **kwargs)


def run_main(capsys, *argv: str):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------- list
def test_list_reads_only_sidecars_and_imports_no_torch(outputs):
    result = cli("-X", "importtime", "-m", "dimba.cli.main", "checkpoints", "list", str(outputs))
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "dimba.cli.checkpoints" in imported
    assert not [m for m in imported if m == "torch" or m.startswith(("torch.", "lightning", "matplotlib"))]

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "milestone", "step", "params", "train", "loss", "val", "bpb", "status", "file"]
    rows = [line.split() for line in lines[1:7]]
    job0, job1 = "multirun/2026-01-02/11-00-00/0", "multirun/2026-01-02/11-00-00/1"
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("2026-01-01/10-00-00", "20.0K", "2"), ("2026-01-01/10-00-00", "40.0K", "4"),
        (job0, "20.0K", "2"), (job0, "40.0K", "4"),
        (job1, "20.0K", "2"), (job1, "40.0K", "4"),
    ]
    assert rows[0][3] == "26.4K" and rows[1][3] == "50.7K"
    assert float(rows[0][4]) > 0  # train/loss from the sidecar's metadata
    assert rows[0][5] == "-"  # these runs validated no bound
    assert rows[0][6] == "ok" and rows[0][7] == "progressive_checkpoints/checkpoint_20.0K_step_2.pt"
    assert rows[5][6] == "unreadable" and rows[5][7] == "progressive_checkpoints/checkpoint_40.0K_step_4.json"
    assert lines[7].startswith(f"! {job1}/progressive_checkpoints/checkpoint_40.0K_step_4.json: sidecar unreadable")
    assert len(lines) == 8
    # Columns are aligned: every row's "file" column starts where the header's does.
    start = lines[0].index("file")
    assert all(line[start:].startswith("progressive_checkpoints/") for line in lines[1:7])


def test_list_of_a_single_run_an_empty_folder_and_a_missing_sidecar_target(outputs, run_dir, tmp_path, capsys):
    code, out, err = run_main(capsys, "checkpoints", "list", str(run_dir))
    assert code == 0 and err == ""
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [[".", "20.0K", "2"], [".", "40.0K", "4"]]

    code, out, _ = run_main(capsys, "checkpoints", "list", str(tmp_path))
    assert code == 0 and out.strip() == f"No milestone checkpoints under {tmp_path}"

    copy = tmp_path / "run"
    shutil.copytree(run_dir / "progressive_checkpoints", copy / "progressive_checkpoints")
    (copy / "progressive_checkpoints" / "checkpoint_20.0K_step_2.pt").unlink()
    code, out, _ = run_main(capsys, "checkpoints", "list", str(tmp_path))
    assert code == 0
    assert out.splitlines()[1].split()[:7] == ["run", "20.0K", "2", "26.4K", out.splitlines()[1].split()[4], "-",
                                               "missing"]


# ---------------------------------------------------------------------- show
def test_show_prints_metadata_architecture_and_growth_history(milestone, capsys):
    code, out, err = run_main(capsys, "checkpoints", "show", str(milestone))
    assert code == 0 and err == ""
    assert "read from    sidecar checkpoint_40.0K_step_4.json" in out
    assert "milestone    40.0K" in out and "reached      20.0K, 40.0K (of 20.0K, 40.0K, 1.0B)" in out
    assert "step         4" in out and "params       50,680 (50.7K)" in out
    assert "\narchitecture\n" in out and "  d_model          48" in out and "  n_layers         2" in out
    history = out.split("growth history\n")[1].split("\n\n")[0].splitlines()
    assert history[1].split() == ["2", "depth", "->", "2", "layers", "(identity)", "2", "32", "26,432"]
    assert history[2].split() == ["4", "width", "->", "d_model", "48", "2", "48", "50,680"]
    assert "train/loss" in out.split("\nmetadata\n")[1]


def test_show_of_a_lightning_checkpoint_reads_the_file(run_dir, capsys):
    code, out, err = run_main(capsys, "checkpoints", "show", str(run_dir / "checkpoints" / "last.ckpt"))
    assert code == 0 and err == ""
    assert "read from    checkpoint file" in out and "step         6" in out
    assert "params       50,680 (50.7K)" in out and "width -> d_model 48" in out


# ---------------------------------------------------------------------- plot
def test_plot_of_a_real_run_writes_a_png(run_dir, tmp_path, capsys):
    out_png = tmp_path / "figures" / "run.png"
    code, out, err = run_main(capsys, "checkpoints", "plot", str(run_dir), "--out", str(out_png))
    assert code == 0 and err == "" and out.strip() == str(out_png)
    data = out_png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_plot_reconstructs_parameters_from_the_growth_history(run_dir, tmp_path):
    from dimba.plotting import plot_run, read_run

    run = tmp_path / "run"
    shutil.copytree(run_dir / "progressive_checkpoints", run / "progressive_checkpoints",
                    ignore=shutil.ignore_patterns("*.pt"))
    (run / "logs").mkdir()
    (run / "logs" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/loss\n"
        "0,0,10.5,\n0,1,9.0,\n0,2,8.0,\n0,3,,8.2\n0,3,7.5,\n0,4,7.0,\n0,5,6.0,\n0,5,,6.5\n", encoding="utf-8")
    record = read_run(run)
    assert record.params_source == "growth history"
    # No .hydra/config.yaml: the curve starts at the first growth event and runs to the last step.
    assert record.params == [(2.0, 26432.0), (4.0, 50680.0), (5.0, 50680.0)]
    assert [(g.step, g.label) for g in record.growth] == [(2, "depth→2"), (4, "width→48")]
    assert [(m.step, m.label) for m in record.milestones] == [(2, "20.0K"), (4, "40.0K")]
    assert record.columns["val/loss"] == [(3.0, 8.2), (5.0, 6.5)]
    png = plot_run(run)
    assert png == run / "training.png" and png.stat().st_size > 20_000


# ---------------------------------------------------------------------- export
def test_export_round_trip_gives_the_same_logits(milestone, tmp_path, capsys):
    import dimba
    from safetensors.torch import load_file

    out_dir = tmp_path / "export"
    code, out, err = run_main(capsys, "checkpoints", "export", str(milestone), str(out_dir))
    assert code == 0 and err == ""
    assert out.split() == [str(out_dir / "model.safetensors"), str(out_dir / "config.json")]
    config = json.loads((out_dir / "config.json").read_text())
    assert config["format"] == "dimba.export" and config["architecture"]["d_model"] == 48
    assert config["global_step"] == 4 and config["param_count"] == 50_680

    original = dimba.load_model(milestone)
    assert set(load_file(str(out_dir / "model.safetensors"))) == set(original.state_dict())  # eps buffers too
    exported = dimba.load_model(out_dir)
    assert exported.config == original.config and not exported.training
    x_t, t = torch.randn(2, 24, original.config.d_embed), torch.tensor([5, 80])
    with torch.no_grad():
        assert torch.equal(exported(x_t, t), original(x_t, t))

    code, out, _ = run_main(capsys, "checkpoints", "show", str(out_dir))
    assert code == 0 and "export directory" in out and "width -> d_model 48" in out


# ---------------------------------------------------------------------- generate
def test_generate_is_deterministic_for_a_seed_and_keeps_the_prompt(milestone, tmp_path, capsys):
    args = ["generate", str(milestone), "--prompt", "def ", "--steps", "4", "--length", "24"]
    code, first, err = run_main(capsys, *args, "--seed", "7")
    assert code == 0 and err == ""
    assert run_main(capsys, *args, "--seed", "7")[1] == first
    assert run_main(capsys, *args, "--seed", "8")[1] != first
    assert first.startswith("def ") and first.endswith("\n")
    assert len(first[:-1].encode("utf-8", "replace")) >= 20  # 24 bytes; invalid UTF-8 becomes U+FFFD
    assert run_main(capsys, *args, "--seed", "7", "--no-clamp")[0] == 0

    export = tmp_path / "export"
    assert main(["checkpoints", "export", str(milestone), str(export)]) == 0
    capsys.readouterr()
    assert run_main(capsys, "generate", str(export), *args[2:], "--seed", "7")[1] == first


def test_generate_without_a_prompt_samples_unconditionally(milestone, capsys):
    code, out, err = run_main(capsys, "generate", str(milestone), "--steps", "4", "--length", "16", "--seed", "3")
    assert code == 0 and err == "" and out.endswith("\n")
    assert len(out[:-1].encode("utf-8", "replace")) >= 12  # 16 bytes; invalid UTF-8 becomes U+FFFD
    assert run_main(capsys, "generate", str(milestone), "--prompt", "", "--steps", "4", "--length", "16",
                    "--seed", "3")[1] == out  # the same as an empty prompt


def test_generate_draws_several_samples_as_one_batch_each_as_its_seed_alone_would(milestone, capsys):
    args = ["generate", str(milestone), "--prompt", "def ", "--steps", "4", "--length", "24"]
    code, batch, err = run_main(capsys, *args, "--seed", "7", "--num-samples", "3")
    assert code == 0 and err == ""
    headers = [line for line in batch.splitlines() if line.startswith("=== seed")]
    assert headers == ["=== seed 7 ===", "=== seed 8 ===", "=== seed 9 ==="]
    alone = "".join(f"=== seed {seed} ===\n" + run_main(capsys, *args, "--seed", str(seed))[1] for seed in (7, 8, 9))
    assert batch == alone


def test_generate_as_a_console_command(milestone):
    args = ["-m", "dimba.cli.main", "generate", str(milestone), "--prompt", "ab", "--steps", "2", "--seed", "1",
            "--length", "10"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ab") and result.stderr == ""


# ---------------------------------------------------------------------- user errors
@pytest.fixture(scope="module")
def bad(tmp_path_factory, run_dir) -> Path:
    """Files a user might point the command at by mistake."""
    root = tmp_path_factory.mktemp("bad")
    (root / "garbage.pt").write_text("not a checkpoint\n")
    (root / "empty.pt").write_bytes(b"")
    good = (run_dir / "progressive_checkpoints" / "checkpoint_20.0K_step_2.pt").read_bytes()
    (root / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"model_state_dict": {}, "metadata": {"architecture": TINY_MODEL}}, root / "no_weights.pt")
    torch.save(torch.zeros(3), root / "tensor.pt")
    (root / "sidecar.json").write_text("[1, 2]")
    (root / "empty_dir").mkdir()
    (root / "a_file").write_text("x")
    return root


BAD_COMMANDS = [
    (["checkpoints", "list", "{bad}/missing"], "missing: no such directory"),
    (["checkpoints", "list", "{bad}/a_file"], "is not a directory"),
    (["checkpoints", "show", "{bad}/missing.pt"], "missing.pt: no such file or directory"),
    (["checkpoints", "show", "{bad}/garbage.pt"], "is not a checkpoint (neither a PyTorch zip archive nor a pickle)"),
    (["checkpoints", "show", "{bad}/empty.pt"], "is empty (0 bytes)"),
    (["checkpoints", "show", "{bad}/truncated.pt"], "failed reading zip archive"),
    (["checkpoints", "show", "{bad}/tensor.pt"], "is not a checkpoint (it holds a Tensor)"),
    (["checkpoints", "show", "{bad}/sidecar.json"], "is not a dimba checkpoint sidecar"),
    (["checkpoints", "show", "{bad}/empty_dir"], "is a directory that holds no checkpoint"),
    (["checkpoints", "plot", "{bad}/missing"], "missing: no such directory"),
    (["checkpoints", "plot", "{bad}/empty_dir"], "has no metrics"),
    (["checkpoints", "plot", "{bad}/a_file"], "is not a directory"),
    (["checkpoints", "export", "{bad}/garbage.pt", "{bad}/out"], "is not a checkpoint"),
    (["checkpoints", "export", "{ckpt}", "{bad}/a_file"], "exists and is not a directory"),
    (["generate", "{bad}/missing.pt", "--prompt", "a", "--steps", "2", "--seed", "0"], "no such file or directory"),
    (["generate", "{bad}/empty_dir", "--prompt", "a", "--steps", "2", "--seed", "0"], "is a directory that holds no checkpoint"),
    (["generate", "{bad}/no_weights.pt", "--prompt", "a", "--steps", "2", "--seed", "0"], "cannot rebuild the model"),
    (["generate", "{ckpt}", "--prompt", "a", "--steps", "0", "--seed", "0"], "--steps must be at least 1"),
    (["generate", "{ckpt}", "--prompt", "a", "--num-samples", "0"], "--num-samples must be between 1 and 1024"),
    (["generate", "{ckpt}", "--prompt", "a", "--num-samples", "2", "--seed", str(2**64 - 1)],
     "--seed must lie in [-2**63, 2**64 - 2]"),
    (["generate", "{ckpt}", "--prompt", "a", "--steps", "101", "--seed", "0"], "between 1 and the model's diffusion_steps (100)"),
    (["generate", "{ckpt}", "--prompt", "abc", "--steps", "2", "--seed", "0", "--length", "2"], "at least the prompt's length (3 tokens)"),
    (["checkpoints", "plot", "{run}", "--out", "/proc/dimba/x.png"], "cannot write /proc/dimba/x.png"),
    (["generate", "{bad}", "--prompt", "a"], "is a directory that holds no checkpoint"),
    (["checkpoints", "frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, message", BAD_COMMANDS, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(BAD_COMMANDS)])
def test_each_user_error_is_one_line_and_exit_code_2(bad, milestone, capsys, argv, message):
    argv = [a.format(bad=bad, ckpt=milestone, run=milestone.parent.parent) for a in argv]
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("dimba: error: "), err
    assert message in err


def test_a_load_error_in_a_fresh_interpreter_is_one_line(bad):
    result = cli("-m", "dimba.cli.main", "generate", str(bad / "truncated.pt"), "--prompt", "a", "--steps", "2",
                 "--seed", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"dimba: error: Cannot load checkpoint {bad / 'truncated.pt'}: ")


def test_generate_from_a_run_directory_uses_its_newest_checkpoint(run_dir, milestone, capsys):
    code, from_run, err = run_main(capsys, "generate", str(run_dir), "--prompt", "def ", "--length", "12")
    assert code == 0 and err.startswith("dimba: generating from ")  # which file, said once, on stderr
    newest = err.split("generating from ", 1)[1].strip()
    assert newest == str(run_dir / "checkpoints" / "last.ckpt")  # step 6 beats the step-4 milestone
    code, direct, _ = run_main(capsys, "generate", newest, "--prompt", "def ", "--length", "12", "--steps", "16", "--seed", "0")
    assert code == 0 and direct == from_run  # --steps 16 and --seed 0 are the defaults
