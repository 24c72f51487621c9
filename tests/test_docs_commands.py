"""Every shell command in the README and the docs is one that works as written.

A shell block's commands train for minutes or need a GPU, a cluster or the user's data, so
they are checked for what can go stale without running them: each `python train.py ...`
composes and validates (every job of a `-m` sweep) exactly as train.py's own check does
before Hydra starts; each `dimba ...` command parses with the `dimba` command line (so every
flag it shows exists); each `python bench/X.py ...` names a script that has every flag it
shows. Commands that need files the reader makes first (their data, a run's checkpoint)
are checked for their flags and overrides only where those files are not needed.
"""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import ROOT
from dimba.cli.main import build_parser
from dimba.command_line import check_job, jobs_of
from dimba.config import register_configs

register_configs()

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.S | re.M)
NEEDS_USER_FILES = ("data.path=data/wiki", "ckpt_path=outputs/", "my/corpus.txt", "<same overrides>")
PLUGINS = {"hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
           "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
           "hydra/sweeper=optuna": "hydra_plugins.hydra_optuna_sweeper"}


def commands():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            first = text.count("\n", 0, match.start()) + 2
            joined = re.sub(r"\\\n\s*", " ", match.group(1))  # continuation lines
            for offset, line in enumerate(joined.splitlines()):
                command = line.split("  #")[0].split(" # ")[0].strip()
                if command:
                    yield pytest.param(command, id=f"{doc.relative_to(ROOT)}:{first + offset}")


def train_commands():
    return [c for c in commands() if " train.py" in c.values[0] and "&&" not in c.values[0]]


def dimba_commands():  # not the synopsis lines ([optional], A|B, UPPER placeholders alone)
    return [c for c in commands() if c.values[0].startswith("dimba ") and "[" not in c.values[0]]


def bench_commands():
    return [c for c in commands() if re.search(r"(^|/)python3? bench/", c.values[0])]


def test_the_docs_show_each_kind_of_command():
    assert len(train_commands()) >= 20 and len(dimba_commands()) >= 4 and len(bench_commands()) >= 10


@pytest.mark.parametrize("command", train_commands())
def test_a_train_command_composes_and_validates(command):
    if any(need in command for need in NEEDS_USER_FILES):
        pytest.skip("needs the reader's own files or overrides")
    argv = shlex.split(command)[argv_start(command):]
    for override, module in PLUGINS.items():
        if override in argv:
            pytest.importorskip(module)
    jobs = jobs_of(argv)
    assert jobs, command
    for overrides in jobs:
        if any(need in o for o in overrides for need in NEEDS_USER_FILES):
            continue
        job = check_job([*overrides, "dry_run=true"], ROOT / "conf", "config")
        assert job.error is None, f"{command}: {job.error}"


def argv_start(command: str) -> int:
    return shlex.split(command).index("train.py") + 1


@pytest.mark.parametrize("command", dimba_commands())
def test_a_dimba_command_parses(command):
    argv = shlex.split(command)[1:]
    build_parser().parse_args(argv)  # an unknown flag or a missing argument is SystemExit


@pytest.mark.parametrize("command", bench_commands())
def test_a_benchmark_command_names_a_script_with_its_flags(command):
    words = shlex.split(command)
    script = next(w for w in words if w.startswith("bench/") and w.endswith(".py"))
    source = (ROOT / script).read_text(encoding="utf-8")
    for flag in (w.strip("[]").split("=")[0] for w in words if w.strip("[]").startswith("--")):
        assert f'"{flag}"' in source, f"{script} has no {flag}"
