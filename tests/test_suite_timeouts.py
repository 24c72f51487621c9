"""A slow machine makes the suite slower, never red: no test waits less than the hang guard.

Speed is measured by the benchmarks; a wall-clock limit in a test only turns a loaded
machine into a failure (the default run took 128 s alone and hit a 600 s limit beside
other jobs). Every `timeout=` a test passes, and every `timeout` parameter's default, is
the shared HANG_GUARD_S or more.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import HANG_GUARD_S

TESTS = Path(__file__).resolve().parent


def short_timeouts(source: str) -> list:
    """(line, value) of every literal timeout below the guard: keyword arguments and defaults."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == "timeout":
            values = [node.value]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args[len(node.args.args) - len(node.args.defaults):]
            values = [d for a, d in zip(args, node.args.defaults) if a.arg == "timeout"]
            values += [d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if a.arg == "timeout" and d]
        else:
            continue
        found += [(v.lineno, v.value) for v in values
                  if isinstance(v, ast.Constant) and isinstance(v.value, (int, float)) and v.value < HANG_GUARD_S]
    return sorted(found)


def test_the_check_sees_a_short_timeout():
    assert short_timeouts("run(cmd, timeout=300)\ndef train(timeout: int = 60): pass\n") == [(1, 300), (2, 60)]
    assert short_timeouts("run(cmd, timeout=HANG_GUARD_S)\n") == []


def test_no_test_limits_wall_clock_time_below_the_hang_guard():
    offenders = {path.name: hits for path in sorted(TESTS.glob("*.py"))
                 if (hits := short_timeouts(path.read_text(encoding="utf-8")))}
    assert offenders == {}
