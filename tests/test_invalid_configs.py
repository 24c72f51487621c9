"""The catalogue of invalid configurations: each one is refused before training with one
line naming the key, the value and what is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dimba.config import register_configs, validate
from dimba.errors import ConfigError
from dimba.preflight import check_writable_dir, resolve_save_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()

CATALOGUE = [
    # milestones
    (["progressive_checkpoints.milestones=[abc]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[-5]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[0]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[nan]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[inf]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[1.5X]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[1M,'']"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.milestones=[0.5]"], "progressive_checkpoints.milestones"),
    (["progressive_checkpoints.save_dir=''"], "progressive_checkpoints.save_dir"),
    # learning rates that cannot be meant
    (["optim.lr=1e9"], "optim.lr"),
    (["optim.lr=1.5"], "optim.lr"),
    # the likelihood bound at validation
    (["validation.bpb_samples=3"], "validation.bpb_samples"),
    (["validation.bpb_samples=0"], "validation.bpb_samples"),
    (["validation.bpb_samples=abc"], "validation.bpb_samples"),
    (["validation.bpb_sequences=-1"], "validation.bpb_sequences"),
    (["validation.bpb_sequences=2.5"], "validation.bpb_sequences"),
    # learning-rate schedules
    (["optim.schedule=linear"], "optim.schedule"),
    (["optim.schedule=wsd", "optim.decay_fraction=0"], "optim.decay_fraction"),
    (["optim.decay_fraction=1.5"], "optim.decay_fraction"),
    (["growth.rewarm_steps=-3"], "growth.rewarm_steps"),
    (["growth.lr_width_exponent=3"], "growth.lr_width_exponent"),
    (["optim.schedule=constant", "growth.lr_restart=true"], "growth.lr_restart"),
    # growth schedules
    (["growth.schedule=[{step:100,op:depth,n_layers:8},{step:50,op:width,d_model:192}]"], "growth.schedule[1].step"),
    (["growth.schedule=[{step:0,op:depth,n_layers:8}]"], "growth.schedule[0].step"),
    (["growth.schedule=[{step:10,op:deeper,n_layers:8}]"], "growth.schedule[0].op"),
    (["growth.schedule=[{step:10,op:depth,n_layers:4}]"], "growth.schedule[0].n_layers"),
    (["growth.schedule=[{step:10,op:depth,n_layers:8,mode:copy}]"], "growth.schedule[0].mode"),
    (["growth.schedule=[{step:10,op:width,d_model:100}]"], "growth.schedule[0].d_model"),
    (["growth.schedule=[{step:10,op:width,d_model:200}]"], "growth.schedule[0].d_model"),
    (["growth.schedule=[{step:10,op:width,d_model:256,n_layers:9}]"], "growth.schedule[0].n_layers"),
    (["growth.schedule=[{step:10,op:width}]"], "growth.schedule[0].d_model"),
    (["growth.schedule=[{step:10,op:width,d_model:256},{step:20,op:width,d_model:192}]"], "growth.schedule[1].d_model"),
    # model shapes
    (["model.d_model=0"], "model.d_model"),
    (["model.n_layers=-1"], "model.n_layers"),
    (["model.head_dim=100"], "model.head_dim"),
    (["model.d_time=15"], "model.d_time"),
    (["model.norm_eps=0"], "model.norm_eps"),
    (["model.dtype=fp16"], "model.dtype"),
    (["model.scan=cuda"], "model.scan"),
    (["model.vocab_size=100"], "model.vocab_size"),
    (["model.chunk_size=0"], "model.chunk_size"),
    # data and paths
    (["data.files=[/no/such/corpus.txt]"], "data.files[0]"),
    (["data.seq_len=0"], "data.seq_len"),
    (["data.batch_size=-2"], "data.batch_size"),
    (["data.val_fraction=0.9"], "data.val_fraction"),
    (["data.num_workers=-1"], "data.num_workers"),
    # trainer options
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["trainer.accelerator=quantum"], "trainer.accelerator"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps"),
    (["trainer.num_nodes=0"], "trainer.num_nodes"),
    (["trainer.devices=0"], "trainer.devices"),
    (["trainer.devices=abc"], "trainer.devices"),
    (["trainer.precision=banana"], "trainer.precision"),
    (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches"),
    (["trainer.val_check_interval=0.5"], "trainer.val_check_interval"),
    (["trainer.use_distributed_sampler=true"], "trainer.use_distributed_sampler"),
    (["trainer.strategy=fsdp"], "trainer.strategy"),  # Lightning's FSDP1: not dimba's trainer=fsdp
    (["trainer.strategy=deepspeed"], "trainer.strategy"),
    (["trainer.strategy=fsdp", "growth=none"], "trainer.strategy"),  # a full state dict gathered on one rank
    (["trainer.logger=true"], "trainer.logger"),  # dimba sets it: the logger group
    (["trainer.callbacks=[]"], "trainer.callbacks"),
    (["trainer.enable_checkpointing=false"], "trainer.enable_checkpointing"),
    (["data=text_files"], "data.files"),  # `files: ???`: the option needs it
    (["data=text_files", "data.files=[/no/such/dir/*.txt]"], "data.files[0]"),
    (["data=text_files", "data.files=[/no/such/file.txt]"], "data.files[0]"),
    (["compile=true", "trainer.strategy=ddp_spawn", "trainer.devices=2"], "compile"),
    (["data.seq_len=1000000"], "data.seq_len"),
    (["seed=-5"], "seed"),
    (["seed=10000000000000"], "seed"),
    # optimizer
    (["optim.lr=-1"], "optim.lr"),
    (["optim.betas=[0.9]"], "optim.betas"),
    (["optim.betas=[0.9,1.5]"], "optim.betas"),
    (["optim.warmup_steps=-1"], "optim.warmup_steps"),
    (["optim.min_lr_ratio=2"], "optim.min_lr_ratio"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay"),
    # resume targets and checkpoint cadence
    (["ckpt_path=/no/such/last.ckpt"], "ckpt_path"),
    (["ckpt_path=/etc/passwd"], "ckpt_path"),
    (["ckpt_path=tests/data/v1/run/progressive_checkpoints/checkpoint_6.0K_step_2.json"], "ckpt_path"),
    (["ckpt_path=tests/data"], "ckpt_path"),
    (["optim.total_steps=0"], "optim.total_steps"),
    (["objective.mse_weight=-1"], "objective.mse_weight"),
    (["resume=yes"], "resume"),
    (["resume=auto", "ckpt_path=README.md"], "ckpt_path"),
    (["last_checkpoint_every_n_steps=0"], "last_checkpoint_every_n_steps"),
    # objective (CDLM consistency training)
    (["objective=cdlm", "objective.consistency_loss_weight=-0.5"], "objective.consistency_loss_weight"),
    (["objective=cdlm", "objective.consistency_loss_weight=nan"], "objective.consistency_loss_weight"),
    (["objective=cdlm", "objective.consistency_loss_weight=inf"], "objective.consistency_loss_weight"),
    (["objective=cdlm", "objective.consistency_delta_min=0"], "objective.consistency_delta_min"),
    (["objective=cdlm", "objective.consistency_delta_min=2.5"], "objective.consistency_delta_min"),
    (["objective=cdlm", "objective.consistency_delta_max=abc"], "objective.consistency_delta_max"),
    (["objective=cdlm", "objective.consistency_delta_min=100", "objective.consistency_delta_max=50"], "objective.consistency_delta_max"),
    (["objective=cdlm", "objective.consistency_delta_max=1000"], "objective.consistency_delta_max"),
    (["objective=cdlm", "model.diffusion_steps=200"], "objective.consistency_delta_max"),
]


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 30


@pytest.mark.parametrize("overrides, key", CATALOGUE, ids=[" ".join(o) for o, _ in CATALOGUE])
def test_each_invalid_config_is_refused_with_one_clear_line(overrides, key, monkeypatch):
    monkeypatch.chdir(CONF.parent)
    with pytest.raises(ConfigError) as info:
        validate(compose_config(overrides))
    message = str(info.value)
    assert message.startswith(f"{key}: ") and "\n" not in message
    assert "accepted: " in message and len(message.split("accepted: ", 1)[1]) > 3


@pytest.mark.parametrize("save_dir", ["not_a_dir/sub", "a_file", "/proc/dimba-cannot-write-here"])
def test_unusable_save_dirs_are_refused_before_training(tmp_path, save_dir):
    (tmp_path / "not_a_dir").write_text("a file")
    (tmp_path / "a_file").write_text("a file")
    path = resolve_save_dir(save_dir, tmp_path)
    with pytest.raises(ConfigError) as info:
        check_writable_dir(path, "progressive_checkpoints.save_dir")
    assert str(info.value).startswith(f"progressive_checkpoints.save_dir: '{path}'")
    assert "a directory this user can create and write to" in str(info.value)


def test_a_usable_save_dir_is_created(tmp_path):
    check_writable_dir(tmp_path / "a" / "b", "progressive_checkpoints.save_dir")
    assert (tmp_path / "a" / "b").is_dir() and list((tmp_path / "a" / "b").iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("preset", ["gpu", "ddp", "fsdp"])
def test_gpu_presets_without_a_gpu_are_refused_before_training(preset, monkeypatch):
    from dimba.preflight import check_accelerator

    monkeypatch.chdir(CONF.parent)
    config = validate(compose_config([f"trainer={preset}", "growth=none"]))
    with pytest.raises(ConfigError, match=r"^trainer.accelerator: 'gpu' is invalid; accepted: cpu or auto on this machine"):
        check_accelerator(config.trainer.accelerator)


# Errors Hydra and OmegaConf raise while composing, before dimba's validation: the same one line.
COMPOSITION = [
    (["objective.use_consistency_training=maybe"], "objective.use_consistency_training: 'maybe' is invalid; accepted: true or false"),
    (["optim.lr=abc"], "optim.lr: 'abc' is invalid; accepted: a number"),
    (["model.n_layers=2.5"], "model.n_layers: 2.5 is invalid; accepted: an integer"),
    (["data=text_files", "data.files=corpus.txt"], "data.files: 'corpus.txt' is invalid; accepted: a list in brackets"),
    (["progressive_checkpoints.milestones=1B,5B"],
     "progressive_checkpoints.milestones: '1B,5B' is invalid; accepted: a list in brackets, progressive_checkpoints.milestones=[1B,5B]"),
    (["growth.schedule=[{step:a}]"], "growth.schedule[...].step: 'a' is invalid; accepted: an integer"),
    (["progressive_checkpoint=billions"], "unknown config group or key 'progressive_checkpoint'; groups: data, experiment"),
    (["trainer=gpuu"], "unknown group option 'gpuu' for trainer; available: cpu, ddp, ddp_cpu, fsdp, gpu (did you mean gpu?)"),
    (["trainer=base_trainer"], "unknown group option 'base_trainer' for trainer; available: cpu, ddp, ddp_cpu, fsdp, gpu"),
    (["hydra/launcher=jobllib"], "unknown group option 'jobllib' for hydra/launcher; available: basic, joblib"),
    (["model.nope=1"], "unknown key 'model.nope'; model has: vocab_size, d_model"),
    (["+seed=3"], "seed is already a key of the config: set it without '+'"),
    (["trainer.max_steps"], "command line: "),
]


@pytest.mark.parametrize("overrides, message", COMPOSITION, ids=[" ".join(o) for o, _ in COMPOSITION])
def test_composition_errors_are_one_line_too(overrides, message):
    from dimba.command_line import check_job

    job = check_job(overrides, CONF, "config")
    assert job.error is not None and str(job.error).startswith(message), str(job.error)
    assert "\n" not in str(job.error) and "base_trainer" not in str(job.error).split("available: ", 1)[-1]


@pytest.mark.parametrize("milestones, suggestion", [("[1,5,10,30]", "[1B,5B,10B,30B]"),
                                                     ("[100K,400K]", "[1B,5B,10B,30B]")])
def test_milestones_the_model_starts_above_are_refused_before_hydra_runs(milestones, suggestion, tmp_path,
                                                                         monkeypatch):
    """The default model starts at 452K parameters: [1,5,10,30] would be four saves at step 0.
    Read as billions elsewhere (the interactive setup), here it gets a line that says so."""
    import io

    from dimba.command_line import check_command_line

    monkeypatch.chdir(tmp_path)
    out, errors = io.StringIO(), io.StringIO()
    status = check_command_line([f"progressive_checkpoints.milestones={milestones}"], CONF, out=out, err=errors)
    err = errors.getvalue()
    assert status == 2 and err.count("\n") == 1 and not list(tmp_path.iterdir())  # no run directory
    assert err.startswith("Invalid config: progressive_checkpoints.milestones: ")
    assert "452.1K" in err and suggestion in err


def test_milestones_partly_passed_at_the_start_still_run():
    """A first milestone below the starting size is saved at step 1 (a BPE model starting at
    1.1M against [1M,2M,4M]): only a list the model has passed entirely is refused."""
    from dimba.planning import check_milestones_ahead, growth_plan

    config = validate(compose_config(["progressive_checkpoints.milestones=[500K,2M]"]))
    check_milestones_ahead(config, growth_plan(config))  # no error
    resumed = validate(compose_config(["progressive_checkpoints.milestones=[100K]"]))
    resumed.resume = "auto"
    check_milestones_ahead(resumed, growth_plan(resumed))  # a resumed run skips what it has passed


@pytest.mark.parametrize("override, message", [
    ("ckpt_path={tmp}/plain.pt", "ckpt_path: {tmp}/plain.pt is not a training checkpoint (no global_step); accepted: "),
    ("progressive_checkpoints.save_dir={tmp}/a_file", "progressive_checkpoints.save_dir: '{tmp}/a_file' is invalid; "),
    ("progressive_checkpoints.save_dir=/proc/dimba-x", "progressive_checkpoints.save_dir: '/proc/dimba-x' is invalid; "),
    ("+trainer.foo=1", "trainer.foo: 1 is invalid; accepted: a key of trainer"),
    pytest.param("trainer=gpu", "trainer.accelerator: 'gpu' is invalid; accepted: cpu or auto on this machine",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")),
    ("hydra.run.dir={tmp}/a_file/run", "hydra.run.dir: '{tmp}/a_file/run' is invalid; accepted: a directory"),
    ("hydra.run.dir=/proc/dimba-run", "hydra.run.dir: '/proc/dimba-run' is invalid; accepted: a directory"),
])
def test_errors_a_run_would_meet_later_are_found_before_anything_is_written(tmp_path, monkeypatch, override, message):
    """Each of these used to pass the command line, let Hydra create the run's directory and
    fail there (two as tracebacks): now one line, exit 2, and no directory anywhere."""
    import io

    import torch

    from dimba.command_line import check_command_line

    (tmp_path / "a_file").write_text("a file")
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")  # a plain state dict, not a training checkpoint
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out, err = io.StringIO(), io.StringIO()
    status = check_command_line(["trainer.max_steps=2", override.format(tmp=tmp_path)], CONF, out=out, err=err)
    assert status == 2 and out.getvalue() == ""
    assert err.getvalue().startswith("Invalid config: " + message.format(tmp=tmp_path))
    assert err.getvalue().count("\n") == 1
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "plain.pt", "work"]
