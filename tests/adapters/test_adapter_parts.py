"""Both chat adapters are built alike: the same file names for the same parts, and every part but
the adapter class reaches the core only through its host interface (`host.service`, `host.store`,
`host.public_url`: bot/adapters/deps.py), never through the composition root (`adapter.app`)."""
from __future__ import annotations

import ast
from pathlib import Path

ADAPTERS = Path(__file__).resolve().parents[2] / "bot" / "adapters"
#: The adapter class of each package: the only module that holds the App.
ENTRY = {"slack": "app.py", "discord_bot": "client.py"}
#: Parts both adapters have, each meaning the same thing in both.
SHARED_PARTS = ("host", "flows", "commands", "buttons", "reactions", "status", "delivery", "stories", "takes")


def test_the_same_parts_have_the_same_names_in_both_adapters() -> None:
    for package in ENTRY:
        names = {p.stem for p in (ADAPTERS / package).glob("*.py")}
        assert set(SHARED_PARTS) <= names, f"{package} lacks {set(SHARED_PARTS) - names}"


def test_no_part_but_the_adapter_class_reaches_the_app() -> None:
    offences = []
    for package, entry in ENTRY.items():
        for path in (ADAPTERS / package).glob("*.py"):
            if path.name == entry:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr == "app":
                    offences.append(f"{package}/{path.name}:{node.lineno} {ast.unparse(node)}")
    assert offences == []


def test_the_host_interfaces_offer_the_core_and_not_the_app() -> None:
    from bot.adapters.deps import Core
    from bot.adapters.discord_bot.host import DiscordHost
    from bot.adapters.slack.host import SlackHost

    for host in (SlackHost, DiscordHost):
        assert Core in host.__mro__
        assert "app" not in host.__annotations__
    assert {"service", "store", "public_url"} <= set(vars(Core))
