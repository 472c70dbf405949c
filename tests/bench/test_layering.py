"""bench sits above launch: `disttrain bench` runs a benchmark as a subprocess, and the
benchmarks run jobs through the `disttrain train` command, so neither imports the other's
way round (launch -> bench) and bench imports nothing from launch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _imported_modules(path: Path) -> list[str]:
    """Every module a file imports, relative imports resolved against disttrain.bench."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            package = ["disttrain", "bench"][:3 - node.level] if node.level else []
            module = ".".join(filter(None, [*package, node.module]))
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_nothing_under_bench_imports_launch():
    files = sorted(BENCH.rglob("*.py"))
    assert files, BENCH
    offenders = {str(f.relative_to(BENCH)): m for f in files for m in _imported_modules(f)
                 if m.split(".")[:2] == ["disttrain", "launch"] or m.split(".")[0] == "launch"}
    assert offenders == {}


def test_the_import_check_sees_relative_and_absolute_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import disttrain.launch.cli\nfrom ..launch import report\n"
                     "from .common import REPO\n")
    assert _imported_modules(probe) == ["disttrain.launch.cli", "disttrain.launch",
                                        "disttrain.launch.report", "disttrain.bench.common",
                                        "disttrain.bench.common.REPO"]


def test_importing_the_cli_does_not_import_bench():
    code = ("import sys, disttrain.launch.cli\n"
            "print(sorted(m for m in sys.modules if m.startswith('disttrain.bench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
