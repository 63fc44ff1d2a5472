"""deploy/.env.example lists every environment variable FlowKit reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READERS = re.compile(r"""(?:env_\w+|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']""")
# ${NAME:-default} and ${NAME}: FlowKit's own in the bring-up script (its others are
# its local names), every one in the compose file.
SCRIPT_READERS = re.compile(r"\$\{(FLOWKIT_[A-Z0-9_]+)")
COMPOSE_READERS = re.compile(r"\$\{([A-Z][A-Z0-9_]+)")


def variables_read_by(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in READERS.findall(path.read_text())}


def test_every_variable_read_by_the_settings_and_the_runner_is_in_env_example():
    sources = [REPO / "web_ui" / "settings.py", *sorted((REPO / "node_runner").glob("*.py"))]
    read = variables_read_by(sources) - {"DJANGO_SETTINGS_MODULE"}
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (REPO / "deploy" / ".env.example").read_text(), re.M))
    assert len(read) > 20  # the pattern found the settings
    assert read - listed == set()


def test_every_variable_the_bring_up_script_and_the_compose_files_read_is_in_env_example():
    read = set(SCRIPT_READERS.findall((REPO / "deploy" / "bootstrap" / "up.sh").read_text()))
    for compose in ("compose.yml", "compose.worker.yml"):
        read |= set(COMPOSE_READERS.findall((REPO / "deploy" / compose).read_text()))
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (REPO / "deploy" / ".env.example").read_text(), re.M))
    assert "FLOWKIT_WORKER_CONCURRENCY_MAX" in read  # the pattern found them
    assert read - listed == set()
