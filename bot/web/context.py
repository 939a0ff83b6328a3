"""What every handler of the web gallery reaches: the app (store, service, registry), the signing key, templates."""
from __future__ import annotations

from dataclasses import dataclass

import jinja2
from aiohttp import web

from bot.app import App
from bot.config import CoreSettings


@dataclass
class WebContext:
    app: App
    key: bytes
    templates: jinja2.Environment

    @property
    def settings(self) -> CoreSettings:
        return self.app.settings.core


CONTEXT = web.AppKey("videobot_web", WebContext)


def context(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
