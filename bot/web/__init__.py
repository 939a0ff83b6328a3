"""The web gallery: every video of a tenant, its lineage and cost, and the admins' view.

`videobot web` serves it alone; `videobot run` serves it too when VIDEOBOT_WEB_PORT is set.
People reach it through a personal signed link (`/gallery` in chat, `videobot web --link`).
"""
