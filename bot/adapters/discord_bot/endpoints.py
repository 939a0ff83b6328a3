"""Where discord.py sends REST calls and opens the gateway: settings, for proxies and emulators.

discord.py keeps both as class attributes (`Route.BASE`, `DiscordWebSocket.DEFAULT_GATEWAY`);
tests/adapters/discord/test_discord_canary.py fails loudly if a release moves them.
"""
from __future__ import annotations

import discord
import discord.gateway
import discord.http
import yarl

from bot.config import DiscordSettings

DISCORD_API = "https://discord.com/api/v10"
DISCORD_GATEWAY = "wss://gateway.discord.gg/"


def apply_endpoints(settings: DiscordSettings) -> None:
    discord.http.Route.BASE = (settings.api_base_url or DISCORD_API).rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url or DISCORD_GATEWAY)
