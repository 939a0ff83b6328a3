"""The Slack adapter package has no import cycles: the adapter registers its listener modules,
and no listener module imports the adapter module back (types only, under TYPE_CHECKING)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "bot" / "adapters" / "slack"
LISTENERS = ("commands", "buttons", "views", "reactions", "shortcuts", "settings_modal", "stories", "installs")


def _runtime_imports(path: Path) -> set[str]:
    """Modules a file imports when it runs (imports under `if TYPE_CHECKING:` do not count)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for node in ast.walk(block)}  # fmt: skip
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_no_module_of_the_package_imports_the_adapter_module() -> None:
    for path in PACKAGE.glob("*.py"):
        if path.name != "app.py":
            assert "bot.adapters.slack.app" not in _runtime_imports(path), f"{path.name} imports the adapter back"


def test_each_listener_module_imports_alone_and_registers_itself() -> None:
    code = "\n".join(
        ["import sys"]
        + [f"import bot.adapters.slack.{name} as m; assert callable(m.register)" for name in LISTENERS]
        + ["assert 'bot.adapters.slack.app' not in sys.modules, 'a listener pulled the adapter in'"]
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parents[2])
    app = (PACKAGE / "app.py").read_text()
    assert f"LISTENERS = ({', '.join(LISTENERS)})" in app and "module.register(self.bolt, self)" in app
