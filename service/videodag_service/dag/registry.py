"""Which plugins exist: the built-in ones plus those installed through entry points.

Third-party packages register a `Plugin` in the `videodag.plugins` entry-point group,
so `pip install` of a plugin package is all it takes. A broken or clashing plugin
stops the server at start rather than failing on the first video.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points

from videodag_service.dag.plugin import Plugin, Tool

ENTRY_POINT_GROUP = "videodag.plugins"

# Modules that each expose `PLUGIN`; imported at registry build, so they must import cheaply.
BUILTIN_PLUGIN_MODULES: tuple[str, ...] = (
    "videodag_service.plugins.stats",
    "videodag_service.plugins.motion",
    "videodag_service.plugins.ssdlite",
    "videodag_service.plugins.hog",
    "videodag_service.plugins.yolo",
    "videodag_service.plugins.bytetrack",
    "videodag_service.plugins.ocr",
)


class PluginRegistryError(RuntimeError):
    """Raised when plugins cannot be registered: a clash of names or a plugin that fails to load."""


class PluginRegistry:
    """Plugins by name; resolves `plugin.tool` references for the pipeline loader."""

    def __init__(self, plugins: Iterable[Plugin]) -> None:
        self._plugins: dict[str, Plugin] = {}
        for plugin in plugins:
            if plugin.name in self._plugins:
                raise PluginRegistryError(f"two plugins are named {plugin.name!r}")
            self._plugins[plugin.name] = plugin

    def plugin_names(self) -> list[str]:
        return sorted(self._plugins)

    def plugin(self, name: str) -> Plugin | None:
        return self._plugins.get(name)

    def tool(self, plugin_name: str, tool_name: str) -> Tool | None:
        plugin = self._plugins.get(plugin_name)
        return plugin.tool(tool_name) if plugin else None


def builtin_plugins() -> list[Plugin]:
    """The plugins that ship with videodag."""
    return [importlib.import_module(module).PLUGIN for module in BUILTIN_PLUGIN_MODULES]


def entry_point_plugins() -> list[Plugin]:
    """Plugins installed by other packages; each entry point names a Plugin or a callable returning one."""
    found: list[Plugin] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
            plugin = loaded if isinstance(loaded, Plugin) else loaded()
        except Exception as error:
            raise PluginRegistryError(
                f"plugin entry point {entry_point.name!r} ({entry_point.value}) failed to load: {error}"
            ) from error
        if not isinstance(plugin, Plugin):
            raise PluginRegistryError(
                f"plugin entry point {entry_point.name!r} ({entry_point.value}) gave "
                f"{type(plugin).__name__}, not a videodag Plugin"
            )
        found.append(plugin)
    return found


def default_registry() -> PluginRegistry:
    """Built-in plugins plus every installed entry-point plugin."""
    return PluginRegistry([*builtin_plugins(), *entry_point_plugins()])
