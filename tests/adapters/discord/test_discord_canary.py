"""Canary: the discord.py hooks the adapter routes REST and the gateway through.

If a discord.py release moves `Route.BASE` or `DiscordWebSocket.DEFAULT_GATEWAY`, the
DISCORD_API_BASE_URL / DISCORD_GATEWAY_URL settings would silently stop working (and
tests would hit the real Discord): fail here, loudly, instead.
"""
from __future__ import annotations

import inspect

import discord
import discord.gateway
import discord.http
import yarl

from bot.adapters.discord_bot.endpoints import DISCORD_API, DISCORD_GATEWAY, apply_endpoints
from bot.config import DiscordSettings


def test_rest_base_and_gateway_hooks_are_where_the_adapter_expects_them() -> None:
    assert isinstance(discord.http.Route.__dict__.get("BASE"), str), "discord.http.Route.BASE moved"
    assert "self.BASE" in inspect.getsource(discord.http.Route.__init__), "Route no longer builds URLs from BASE"
    gateway = discord.gateway.DiscordWebSocket
    assert isinstance(gateway.__dict__.get("DEFAULT_GATEWAY"), yarl.URL), "DiscordWebSocket.DEFAULT_GATEWAY moved"
    assert "cls.DEFAULT_GATEWAY" in inspect.getsource(gateway.from_client), "from_client no longer uses DEFAULT_GATEWAY"
    assert discord.http.INTERNAL_API_VERSION == 10, "the emulator follows API v10"


def test_settings_move_both_and_defaults_put_them_back() -> None:
    try:
        apply_endpoints(DiscordSettings(api_base_url="http://127.0.0.1:9/api/v10/", gateway_url="ws://127.0.0.1:9/gateway"))
        assert discord.http.Route("GET", "/users/@me").url == "http://127.0.0.1:9/api/v10/users/@me"
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == "ws://127.0.0.1:9/gateway"
    finally:
        apply_endpoints(DiscordSettings(api_base_url=None, gateway_url=None))
    assert discord.http.Route.BASE == DISCORD_API
    assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == DISCORD_GATEWAY
