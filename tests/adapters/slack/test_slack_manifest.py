"""The app manifest asks for what the adapter uses: its commands, events and scopes, no more."""
from __future__ import annotations

import re
from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[3] / "bot" / "adapters" / "slack" / "manifest.yaml"


def _list_under(text: str, key: str) -> list[str]:
    block = re.search(rf"^(\s*){key}:\n((?:\1\s+- .*\n)+)", text, re.M)
    assert block, key
    return [re.sub(r"\s*#.*$", "", line.strip()[2:]).strip() for line in block.group(2).splitlines()]


def test_manifest_matches_what_the_adapter_registers() -> None:
    text = MANIFEST.read_text()
    assert _list_under(text, "bot") == ["commands", "chat:write", "files:write", "files:read", "channels:history", "groups:history", "reactions:read", "users:read"]
    assert _list_under(text, "bot_events") == ["reaction_added"]
    assert re.findall(r"- command: (\S+)", text) == ["/video", "/image"]
    # The message shortcut: a message action whose callback id the adapter listens for.
    shortcut = re.search(r"shortcuts:\n\s+- name: (.+)\n\s+type: (\S+)\n\s+callback_id: (\S+)", text)
    assert shortcut and shortcut.groups() == ("Animate with videobot", "message", "vb_animate_message")
    assert len(shortcut.group(1)) <= 24  # Slack's limit for a shortcut's name
    assert re.search(r"interactivity:\n\s+is_enabled: true", text)
    source = "\n".join(p.read_text() for p in MANIFEST.parent.glob("*.py"))
    assert 'bolt.command("/video")' in source and 'bolt.command("/image")' in source
    assert 'bolt.event("reaction_added")' in source
    assert 'bolt.shortcut({"type": "message_action", "callback_id": ANIMATE_SHORTCUT})' in source
    assert 'ANIMATE_SHORTCUT = "vb_animate_message"' in source
