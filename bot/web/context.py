"""What every handler of the web gallery reaches: the app (store, service, registry), the signing key, templates."""
from __future__ import annotations

from dataclasses import dataclass

import jinja2
from aiohttp import web

from bot.app import App
from bot.config import CoreSettings
from bot.core.signing_key import KeyRing


@dataclass
class WebContext:
    app: App
    keys: KeyRing
    templates: jinja2.Environment

    @property
    def key(self) -> bytes:
        """The signing key now (a rotation replaces it while the gallery runs)."""
        return self.keys.current()

    @property
    def settings(self) -> CoreSettings:
        return self.app.settings.core


CONTEXT = web.AppKey("videobot_web", WebContext)


def context(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
