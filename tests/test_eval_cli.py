"""`dimba eval` as a user runs it: a finished run's milestone, its sidecar's val_bpb, other text,
and every bad input answered in one line with exit status 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dimba.cli.main import main
from test_run import compose_config, train

RUN_OPTIONS = ("objective=diffusion", "trainer.max_steps=6", "trainer.val_check_interval=3", "progressive_checkpoints=millions",
               "growth.schedule=[{step:4,op:width,d_model:48}]", "progressive_checkpoints.milestones=[40K]",
               "validation.bpb_sequences=1000", "validation.bpb_samples=8", "data.seq_len=64")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short run whose validation subset is the whole split (so its val_bpb is the split's)."""
    directory = tmp_path_factory.mktemp("eval-run")
    train(compose_config(*RUN_OPTIONS), directory)
    return directory


def milestone(run_dir: Path) -> Path:
    return next((run_dir / "progressive_checkpoints").glob("*.pt"))


def evaluate(capsys, *argv):
    code = main(["eval", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_milestones_bound_agrees_with_the_val_bpb_in_its_sidecar(run_dir, capsys):
    sidecar = json.loads(milestone(run_dir).with_suffix(".json").read_text())["metadata"]
    code, out, _ = evaluate(capsys, str(milestone(run_dir)), "--samples", "8", "--json")
    assert code == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bytes"] == report["tokens"] > 0 and report["text"] == "the run's validation split"
    combined = math.hypot(report["bpb_se"], sidecar["val_bpb_se"])
    assert abs(report["bpb"] - sidecar["val_bpb"]) <= 4 * combined, (report["bpb"], sidecar["val_bpb"], combined)
    assert set(report["references_bpb"]) == {"uniform", "unigram", "byte_4gram"}
    assert report["references_bpb"]["uniform"] == pytest.approx(8.0)  # bytes: log2(256) per byte
    assert report["references_bpb"]["byte_4gram"] < report["references_bpb"]["unigram"] < 8.0
    assert "bits per byte" in out and "byte 4-gram" in out


def test_val_bpb_is_logged_at_each_validation_and_listed_with_the_milestone(run_dir, capsys):
    import csv

    rows = list(csv.DictReader((run_dir / "logs" / "metrics.csv").open()))
    logged = [(int(r["step"]), float(r["val/bpb"])) for r in rows if r.get("val/bpb")]
    assert {step for step, _ in logged} >= {2, 4, 5}  # two validations and the milestone at step 4 (0-based 5)
    assert all(value > 0 for _, value in logged)
    assert main(["checkpoints", "list", str(run_dir)]) == 0
    listing = capsys.readouterr().out
    assert "val bpb" in listing.splitlines()[0] and "±" in listing
    assert main(["checkpoints", "show", str(milestone(run_dir))]) == 0
    assert "val bpb" in capsys.readouterr().out


def test_a_run_directory_evaluates_its_newest_checkpoint_on_given_text(run_dir, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("Bits per byte count the UTF-8 bytes: é is two of them.\n" * 4, encoding="utf-8")
    code, out, err = evaluate(capsys, str(run_dir), "--data", str(text), "--samples", "4", "--json")
    assert code == 0 and err.startswith("dimba: evaluating ")
    report = json.loads(out.strip().splitlines()[-1])
    assert report["bytes"] == len(text.read_bytes()) and report["sequences"] == math.ceil(report["tokens"] / 64)
    assert report["bpb"] > 0 and report["bpb_se"] >= 0


def test_a_checkpoint_from_before_the_bound_still_evaluates(run_dir, tmp_path, capsys):
    """No recorded data, no val_bpb: with --data it evaluates; without, it says what to pass."""
    checkpoint = torch.load(milestone(run_dir), map_location="cpu", weights_only=True)
    checkpoint["dimba"].pop("data")
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    text = tmp_path / "t.txt"
    text.write_text("plain text " * 20)
    assert evaluate(capsys, str(old), "--data", str(text), "--samples", "2")[0] == 0
    code, _, err = evaluate(capsys, str(old))
    assert code == 2 and "pass --data" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "empty_text", "not_utf8", "missing_data",
                                  "odd_samples", "zero_seq_len"])
def test_bad_input_is_one_line_and_exit_2(case, run_dir, tmp_path, capsys):
    ckpt = str(milestone(run_dir))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("café".encode("latin-1"))
    argv = {
        "missing": [str(tmp_path / "nope.pt")],
        "not_a_checkpoint": [str(junk)],
        "empty_text": [ckpt, "--data", str(empty)],
        "not_utf8": [ckpt, "--data", str(binary)],
        "missing_data": [ckpt, "--data", str(tmp_path / "nowhere.txt")],
        "odd_samples": [ckpt, "--samples", "3"],
        "zero_seq_len": [ckpt, "--seq-len", "0"],
    }[case]
    code, out, err = evaluate(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("dimba: error: ") and len(err.strip().splitlines()) == 1, err


def test_text_the_checkpoints_tokenizer_cannot_encode_is_refused(run_dir, tmp_path, capsys):
    """A word-level tokenizer maps an unknown word to [UNK]: bits of that text would be bits
    of other text, so it is refused, not measured."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    checkpoint = torch.load(milestone(run_dir), map_location="cpu", weights_only=True)
    checkpoint["dimba"]["tokenizer"] = {"name": "pretrained", "content": words.to_str()}
    worded = tmp_path / "worded.pt"
    torch.save(checkpoint, worded)
    text = tmp_path / "zoo.txt"
    text.write_text("hello world zebra")
    code, out, err = evaluate(capsys, str(worded), "--data", str(text))
    assert code == 2 and out == "" and "cannot encode" in err and len(err.strip().splitlines()) == 1
