"""Discovery: plugins are entry points of the group ``archipelago.control``; [control] plugins
enables them. A plugin's ``requires`` must be enabled too (ConfigError naming both)."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from archipelago.config import Config
from archipelago.errors import ConfigError
from control.host.plugin import Plugin

GROUP = "archipelago.control"


@functools.cache
def installed() -> dict[str, str]:
    """Name -> "module:Class" of every installed plugin (nothing imported)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def load_class(name: str) -> type[Plugin]:
    """Import the plugin class registered as ``name``."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Plugin)) or cls.name != name:
                raise ConfigError(f"entry point {name!r} ({ep.value}) is not a Plugin named {name!r}")
            return cls
    raise ConfigError(f"[control] plugins names {name!r}, which is not installed "
                      f"(installed: {', '.join(sorted(installed())) or 'none'})")


def enabled(config: Config) -> list[type[Plugin]]:
    """The enabled plugin classes, each after the plugins it requires."""
    names = list(dict.fromkeys(config.control.plugins))
    classes = {n: load_class(n) for n in names}
    for cls in classes.values():
        for need in cls.requires:
            if need not in classes:
                raise ConfigError(f"plugin {cls.name!r} requires plugin {need!r}: add it to "
                                  "[control] plugins")
    ordered: list[type[Plugin]] = []

    def visit(cls: type[Plugin], path: tuple[str, ...]) -> None:
        if cls in ordered:
            return
        if cls.name in path:
            raise ConfigError(f"plugins require each other: {' -> '.join(path + (cls.name,))}")
        for need in cls.requires:
            visit(classes[need], path + (cls.name,))
        ordered.append(cls)

    for cls in classes.values():
        visit(cls, ())
    return ordered
