"""Which folder may import which: the shared runtime (pipeline/ops/), the Kafka clients
(pipeline/kafka/) and the wire contract import nothing from the supervisor's folder
(pipeline/run/), and the roles reach the runtime without it."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).parent.parent / "pipeline"

# Modules that run the supervisor themselves: the CLI and the chaos run, which starts a
# demo stack under a supervisor and kills its roles.
SUPERVISOR_USERS = ("pipeline.cli", "pipeline.chaos.runner")


def module_name(path: Path) -> str:
    parts = path.relative_to(PIPELINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules() -> dict[str, set[str]]:
    return {module_name(path): imports_of(path) for path in PIPELINE.rglob("*.py")}


def test_ops_kafka_and_the_contract_import_nothing_from_the_supervisors_folder():
    for name, imported in modules().items():
        if name.startswith(("pipeline.ops", "pipeline.kafka", "pipeline.contract")):
            assert not {i for i in imported if i == "pipeline.run" or i.startswith("pipeline.run.")}, name
            assert "pipeline.broker" not in imported, f"{name} imports the embedded broker"


def test_only_the_cli_and_the_chaos_run_import_the_supervisors_folder():
    users = {
        name for name, imported in modules().items()
        if not name.startswith("pipeline.run") and any(i == "pipeline.run" or i.startswith("pipeline.run.") for i in imported)
    }
    assert all(any(name == u or name.startswith(u + ".") for u in SUPERVISOR_USERS) for name in users), users


def test_tests_share_helpers_only_through_tests_support():
    tests = PIPELINE.parent / "tests"
    for path in tests.rglob("*.py"):
        if "support" in path.relative_to(tests).parts:
            continue
        shared = {i for i in imports_of(path) if i.startswith("tests.") and not i.startswith("tests.support")}
        assert not shared, f"{path.relative_to(tests)} imports {sorted(shared)}"
