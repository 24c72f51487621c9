"""Interactive setup: `python scripts/interactive_setup.py`.

1. Setup Progressive Checkpointing: writes a Hydra preset
   `conf/progressive_checkpoints/<name>.yaml` that `python train.py progressive_checkpoints=<name>` uses.
2. View Existing Progressive Checkpoints: a table of the milestone checkpoints under a directory.

Works with piped standard input; end of input or Ctrl-C exits cleanly.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Callable, List, NoReturn, Optional, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dimba.checkpointing.milestones import (  # noqa: E402
    MilestoneError,
    milestone_label,
    parse_milestone_input,
    parse_milestones as parse_config_milestones,
)
from dimba.checkpointing.layout import MILESTONE_DIR as DEFAULT_SAVE_DIR  # noqa: E402

PRESETS = ROOT / "conf" / "progressive_checkpoints"  # --conf-dir points elsewhere (tests do)
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
T = TypeVar("T")


class Quit(Exception):
    """The user ended the session (end of input, Ctrl-C, or 'exit')."""


def ask(prompt: str, default: Optional[str] = None) -> str:
    suffix = f" [{default}]" if default is not None else ""
    try:
        answer = input(f"{prompt}{suffix}: ").strip()
    except (EOFError, KeyboardInterrupt):
        raise Quit from None
    return answer or (default or "")


def ask_until(prompt: str, parse: Callable[[str], T], default: Optional[str] = None) -> T:
    """Re-prompt with the reason until `parse` accepts the answer."""
    while True:
        answer = ask(prompt, default)
        try:
            return parse(answer)
        except ValueError as exc:
            print(f"  ✗ {exc}")


def parse_yes_no(text: str) -> bool:
    answer = text.strip().lower()
    if answer in ("y", "yes"):
        return True
    if answer in ("n", "no"):
        return False
    raise ValueError(f"{text!r}: answer y or n (Enter: n)")


def yes(prompt: str) -> bool:
    """A yes/no question; anything but y, yes, n, no (or Enter, meaning n) is asked again."""
    return ask_until(f"{prompt} (y/n)", parse_yes_no, "n")


def parse_name(text: str) -> str:
    if not NAME.match(text):
        raise ValueError(f"{text!r} is not a preset name: use letters, digits, '_' or '-'")
    return text


def parse_milestones(text: str) -> List[int]:
    if not text:
        raise ValueError("enter at least one milestone, e.g. 1,5,10,30 (billions) or 100M,500M,1B")
    try:
        return parse_milestone_input(text)
    except MilestoneError as exc:
        raise ValueError(str(exc)) from None


def read_preset(path: Path) -> dict:
    """A preset's milestones as ints, in every form the config takes (1000000, 1e9, 1M, 1.5B;
    a bare number is a raw count, as in the config), or a ValueError naming the file."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    try:
        milestones = parse_config_milestones(list(node.get("milestones") or []))
    except MilestoneError as exc:
        raise ValueError(f"{path.name}: milestones: {exc}") from None
    return {"milestones": milestones, "save_dir": node.get("save_dir") or DEFAULT_SAVE_DIR}


def render(milestones: List[int], save_dir: str) -> str:
    labels = ", ".join(milestone_label(m) for m in milestones)
    return (
        f"# Written by scripts/interactive_setup.py ({labels}).\n"
        "defaults:\n  - base_progressive_checkpoints\n  - _self_\n\n"
        f"enabled: true\nmilestones: [{', '.join(str(m) for m in milestones)}]\nsave_dir: {save_dir}\n"
    )


def short_label(milestone: int) -> str:
    """1000000000 -> '1B', 1500000000 -> '1.5B', 1040000 -> '1.04M', 500 -> '500' (for comments)."""
    label = milestone_label(milestone)
    return label.replace(".0", "") if re.fullmatch(r"[0-9]+\.0[KMBT]", label) else label


_COUNT = r"(?<![\w.])[0-9][0-9_]*(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?:\s?[KMBTkmbt])?(?![\w])"
_COUNTS = re.compile(rf"{_COUNT}(?:\s*,\s*{_COUNT})*")
_COMMENT = re.compile(r"(?:^|\s)#.*$")


def retell_milestones(line: str, old: List[int], new: List[int]) -> str:
    """In the line's comment, a list that names exactly the old milestones (in any form)
    names the new ones instead; every other comment and number stays as it was."""
    comment = _COMMENT.search(line.rstrip("\n"))
    if comment is None or old == new:
        return line

    def retold(match: "re.Match[str]") -> str:
        try:
            same = parse_config_milestones(match.group(0)) == old
        except MilestoneError:
            same = False
        return ", ".join(short_label(m) for m in new) if same else match.group(0)

    start, end = comment.span()
    return line[:start] + _COUNTS.sub(retold, line[start:end]) + line[end:]


def update_in_place(text: str, milestones: List[int], save_dir: str, old: Optional[List[int]] = None) -> str:
    """Change only the values of the keys we own, and the comments that list the old
    milestones (`old`); other comments and lines stay as they were."""
    values = {"enabled": "true", "milestones": f"[{', '.join(str(m) for m in milestones)}]", "save_dir": save_dir}
    lines = text.splitlines(keepends=True)
    if old:
        lines = [retell_milestones(line, old, milestones) for line in lines]
    for key, value in values.items():
        pattern = re.compile(rf"^{key}:[^#\n]*?(\s+#.*)?$")  # the comment keeps its spacing
        for i, line in enumerate(lines):
            match = pattern.match(line.rstrip("\n"))
            if match:
                lines[i] = f"{key}: {value}{match.group(1) or ''}\n"
                break
        else:
            lines.append(f"{key}: {value}\n")
    return "".join(lines)


def setup() -> None:
    presets = sorted(p.stem for p in PRESETS.glob("*.yaml"))
    print(f"Existing presets: {', '.join(presets)}")
    base = {"milestones": [], "save_dir": DEFAULT_SAVE_DIR}
    if yes("Continue from an existing preset?"):
        base = ask_until("Preset to start from",
                         lambda t: read_preset(PRESETS / f"{t}.yaml") if t in presets else _unknown(t, presets))
        print(f"  milestones: {', '.join(milestone_label(m) for m in base['milestones']) or 'none'}")
    default_milestones = ",".join(milestone_label(m) for m in base["milestones"]) or None
    # Taking the default keeps the preset's counts as they are: re-read, a bare 500 would mean 500B.
    milestones = ask_until("Milestones (e.g. 1,5,10,30 for billions, or 100M,500M,1B)",
                           lambda t: list(base["milestones"]) if t == default_milestones else parse_milestones(t),
                           default_milestones)
    print(f"  → {', '.join(milestone_label(m) for m in milestones)}")
    save_dir = ask("Save directory (relative: inside each run's output directory)", base["save_dir"])
    name = ask_until("Preset name", parse_name)
    path = PRESETS / f"{name}.yaml"
    if path.exists():
        if not yes(f"{path} exists. Overwrite its milestones and save_dir (comments are kept)?"):
            print("Nothing written.")
            return
        path.write_text(update_in_place(path.read_text(), milestones, save_dir, _milestones_or_none(path)))
    else:
        path.write_text(render(milestones, save_dir))
    print(f"Wrote {path} (your own preset: git ignores it). Train with:\n  python train.py progressive_checkpoints={name}")


def _milestones_or_none(path: Path) -> Optional[List[int]]:
    """The milestones a file holds now (what its comments describe), None if unreadable."""
    try:
        return read_preset(path)["milestones"]
    except Exception:  # a hand-edited file we cannot read: its comments stay untouched
        return None


def _unknown(text: str, presets: List[str]) -> NoReturn:
    raise ValueError(f"no preset {text!r}; choose one of: {', '.join(presets)}")


def view() -> None:
    from dimba.cli.checkpoints import format_table, list_checkpoints

    root = Path(ask("Directory to look in", "outputs"))
    if not root.is_dir():
        print(f"  ✗ {root} is not a directory")
        return
    rows = list_checkpoints(root)
    print(format_table(rows) if rows else f"No milestone checkpoints under {root}.")


MENU = """
DIMBA interactive setup
  1. Setup Progressive Checkpointing
  2. View Existing Progressive Checkpoints
  3. Exit"""


def main(argv: Optional[List[str]] = None) -> int:
    import argparse

    global PRESETS
    parser = argparse.ArgumentParser(description="Set up and view DIMBA progressive checkpoints.")
    parser.add_argument("--conf-dir", type=Path, default=ROOT / "conf", help="the Hydra config directory to write presets into")
    PRESETS = parser.parse_args(argv).conf_dir / "progressive_checkpoints"
    try:
        while True:
            print(MENU)
            choice = ask("Select", "3")
            if choice == "1":
                setup()
            elif choice == "2":
                view()
            elif choice in ("3", "exit", "q", "quit"):
                print("Bye.")
                return 0
            else:
                print(f"  ✗ {choice!r} is not on the menu: enter 1, 2 or 3")
    except Quit:
        print("\nExiting interactive setup.")
        return 0


if __name__ == "__main__":
    sys.exit(main())
