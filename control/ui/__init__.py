"""The `ui` plugin: a server-rendered web UI (aiohttp-jinja2 + vendored htmx) at /ui/."""
