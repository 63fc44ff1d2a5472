"""The contract that keeps the component folders free of import cycles catches one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.import_contracts import component_cycles


def test_cycles_of_any_length_are_found_once_each():
    edges = {"a": {"b": "a.x -> b.y"}, "b": {"c": "b.y -> c.z"}, "c": {"a": "c.z -> a.x", "d": ""}, "d": {}}
    assert component_cycles(edges) == [["a", "b", "c", "a"]]
    assert component_cycles({"a": {"b": ""}, "b": {"c": ""}}) == []
    assert component_cycles({"a": {"b": ""}, "b": {"a": ""}}) == [["a", "b", "a"]]


REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
[importlinter]
root_packages =
    cyc_high
    cyc_middle
    cyc_low
contract_types =
    acyclic_components: tests.import_contracts.AcyclicComponentsContract

[importlinter:contract:no-cycles]
name = No import cycle between the components
type = acyclic_components
components =
    cyc_high
    cyc_middle
    cyc_low
"""


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": f"{where}{os.pathsep}{REPO}"}
    command = [str(Path(sys.executable).with_name("lint-imports")), "--config", "contracts.ini", "--no-cache"]
    return subprocess.run(command, cwd=where, env=environment, capture_output=True, text=True, timeout=120)


def test_lint_imports_fails_on_a_cycle_through_a_lazy_import_and_passes_without_it(tmp_path: Path):
    """Three packages: high imports low (allowed); low imports middle lazily, inside a
    function, and middle imports high: a cycle of three."""
    files = {
        "contracts.ini": CONFIG,
        "cyc_high/__init__.py": "",
        "cyc_high/views.py": "from cyc_low import store\n",
        "cyc_low/__init__.py": "",
        "cyc_low/store.py": "def later():\n    from cyc_middle import rules\n",
        "cyc_middle/__init__.py": "",
        "cyc_middle/rules.py": "import cyc_high.views\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)

    broken = lint_imports(tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "cyc_high -> cyc_low -> cyc_middle -> cyc_high" in broken.stdout, broken.stdout
    assert "cyc_low.store -> cyc_middle.rules" in broken.stdout

    (tmp_path / "cyc_middle/rules.py").write_text("import json\n")
    kept = lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "1 kept, 0 broken" in kept.stdout
