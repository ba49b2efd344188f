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

    def __init__(self, plugins: Iterable[Plugin], origins: Iterable[str] = ()) -> None:
        """`origins`, in the order of `plugins`, say where each came from, for a clash's message."""
        self._plugins: dict[str, Plugin] = {}
        from_where: dict[str, str] = {}
        named = iter(origins)
        for plugin in plugins:
            origin = next(named, "")
            if not isinstance(plugin, Plugin):
                raise PluginRegistryError(f"{plugin!r}{f' ({origin})' if origin else ''} is a "
                                          f"{type(plugin).__name__}, not a videodag Plugin")
            if plugin.name in self._plugins:
                sources = f": {from_where[plugin.name]} and {origin}" if origin and from_where[plugin.name] else ""
                raise PluginRegistryError(f"two plugins are named {plugin.name!r}{sources}; a pipeline could not "
                                          "tell them apart: uninstall one, or rename it")
            self._plugins[plugin.name] = plugin
            from_where[plugin.name] = origin

    def plugin_names(self) -> list[str]:
        return sorted(self._plugins)

    def plugin(self, name: str) -> Plugin | None:
        return self._plugins.get(name)

    def tool(self, plugin_name: str, tool_name: str) -> Tool | None:
        plugin = self._plugins.get(plugin_name)
        return plugin.tool(tool_name) if plugin else None


def builtin_plugins() -> list[Plugin]:
    """The plugins that ship with videodag."""
    return [plugin for plugin, _ in _builtin_plugins_and_origins()]


def entry_point_plugins() -> list[Plugin]:
    """Plugins installed by other packages; each entry point names a Plugin or a callable returning one."""
    return [plugin for plugin, _ in _entry_point_plugins_and_origins()]


def default_registry() -> PluginRegistry:
    """Built-in plugins plus every installed entry-point plugin."""
    found = [*_builtin_plugins_and_origins(), *_entry_point_plugins_and_origins()]
    return PluginRegistry((plugin for plugin, _ in found), (origin for _, origin in found))


def _builtin_plugins_and_origins() -> list[tuple[Plugin, str]]:
    return [(importlib.import_module(module).PLUGIN, f"the built-in {module}") for module in BUILTIN_PLUGIN_MODULES]


def _entry_point_plugins_and_origins() -> list[tuple[Plugin, str]]:
    found: list[tuple[Plugin, str]] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        named = f"plugin entry point {entry_point.name!r} ({entry_point.value})"
        try:
            loaded = entry_point.load()
        except Exception as error:
            raise PluginRegistryError(f"{named} failed to load: {type(error).__name__}: {error}") from error
        if not isinstance(loaded, Plugin) and not callable(loaded):
            raise PluginRegistryError(f"{named} gave {type(loaded).__name__}, not a videodag Plugin nor a "
                                      "callable returning one")
        try:
            plugin = loaded if isinstance(loaded, Plugin) else loaded()
        except Exception as error:
            raise PluginRegistryError(f"{named} failed to load: {type(error).__name__}: {error}") from error
        if not isinstance(plugin, Plugin):
            raise PluginRegistryError(f"{named} gave {type(plugin).__name__}, not a videodag Plugin")
        found.append((plugin, named))
    return found
