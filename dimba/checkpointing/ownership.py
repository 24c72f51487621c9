"""One writer per save directory: a claim file that a second run finds before it trains.

Two runs writing milestones into one directory (an absolute `save_dir` shared by a sweep, two
terminals) would replace each other's files. A run claims its save directory by creating
`.dimba-owner.json` there (exclusively: of two runs starting together, one wins) with its
pid, host, run directory and start time, and removes it when it ends. A claim whose process
is gone is stale and taken over: on the same host the pid (and its start time, against pid
reuse) says so; a run requeued by SLURM recognises its own job id; for a claim from another
host dimba cannot tell, and says how to release it. Torch-free.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

from dimba.checkpointing import atomic_io
from dimba.errors import ConfigError

OWNER_FILE = ".dimba-owner.json"
KEY = "progressive_checkpoints.save_dir"
log = logging.getLogger(__name__)
_HELD: Dict[Path, int] = {}  # claims this process holds, counted (train.py and the callback both claim)


@dataclass
class Owner:
    pid: int
    host: str
    run_dir: str
    started_at: str
    process_start: Optional[str] = None
    slurm_job: Optional[str] = None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, run {self.run_dir}, since {self.started_at}"


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_process(run_dir: str) -> Owner:
    pid = os.getpid()
    return Owner(pid, socket.gethostname(), str(run_dir),
                 _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), _process_start(pid),
                 os.environ.get("SLURM_JOB_ID"))


def read_owner(directory: Path) -> Optional[Owner]:
    try:
        return Owner(**json.loads((Path(directory) / OWNER_FILE).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):  # half-written by a crash: nobody's claim
        return Owner(-1, "?", "?", "?")


def alive(owner: Owner) -> Optional[bool]:
    """True or False for a claim of this host; None where dimba cannot tell (another host)."""
    if owner.pid < 0:
        return False
    me = this_process("")
    if owner.slurm_job and owner.slurm_job == me.slurm_job and owner.pid != me.pid:
        return False  # this job's earlier incarnation (SLURM requeued it)
    if owner.host != me.host:
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    return owner.process_start is None or _process_start(owner.pid) == owner.process_start


def refusal(directory: Path, owner: Owner, known_alive: Optional[bool]) -> ConfigError:
    how = "choose another with progressive_checkpoints.save_dir=<dir> (a relative path is inside the run's own directory)"
    if known_alive is None:
        how += f", or, if that run has ended, delete {Path(directory) / OWNER_FILE}"
    return ConfigError(KEY, str(directory), "", line=f"{KEY}: {directory} is being written by another run "
                                                      f"({owner.describe()}); {how}")


def check_free(directory: Path) -> None:
    """Refuse a directory another live run holds (a look only; `claim` takes it)."""
    owner = read_owner(directory)
    if owner is not None and owner.pid != os.getpid():
        state = alive(owner)
        if state is not False:
            raise refusal(directory, owner, state)


class SaveDirClaim:
    """Holds the claim on a save directory until `release` (or the end of a `with` block)."""

    def __init__(self, directory: Path, run_dir: str) -> None:
        self.directory = Path(directory).resolve()
        self.run_dir = str(run_dir)
        self._acquire()

    def _acquire(self) -> None:
        if _HELD.get(self.directory):
            _HELD[self.directory] += 1
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / OWNER_FILE
        for _ in range(3):  # another run may be taking over the same stale claim
            if self._publish(path):
                atomic_io.fsync_dir(self.directory)
                _HELD[self.directory] = 1
                return
            self._take_over_if_stale(path)
        raise refusal(self.directory, read_owner(self.directory) or this_process("?"), None)

    def _publish(self, path: Path) -> bool:
        """Create the claim whole, or not at all (False: a claim is there). The owner is written
        to a file of this process's own and hard-linked to the claim's name, which fails if the
        name exists: another run never sees a claim half-written, which it would take for a
        crashed run's and take over while this one goes on writing."""
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{OWNER_FILE}.", suffix=".draft")
        draft = Path(name)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(this_process(self.run_dir)), handle)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(draft, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: create the name exclusively instead
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(draft.read_text(encoding="utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            draft.unlink(missing_ok=True)
        return True

    def _take_over_if_stale(self, path: Path) -> None:
        owner = read_owner(self.directory)
        if owner is None:
            return
        state = alive(owner)
        if state is not False:
            raise refusal(self.directory, owner, state)
        aside = path.with_name(f"{OWNER_FILE}.stale-{os.getpid()}")
        try:
            os.rename(path, aside)  # atomic: of two runs taking over, one renames, the other retries
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        log.warning("%s: took over the claim of a run that is gone (%s)", self.directory, owner.describe())

    def release(self) -> None:
        count = _HELD.get(self.directory, 0)
        if count > 1:
            _HELD[self.directory] = count - 1
            return
        _HELD.pop(self.directory, None)
        owner = read_owner(self.directory)
        if owner is not None and owner.pid == os.getpid() and owner.host == socket.gethostname():
            (self.directory / OWNER_FILE).unlink(missing_ok=True)

    def __enter__(self) -> "SaveDirClaim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
