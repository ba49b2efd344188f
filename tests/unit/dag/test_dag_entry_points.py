"""A third-party plugin installed with pip is discovered through its entry point and runs."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from videodag_service.dag import (
    DagPipelineService,
    PluginRegistryError,
    default_registry,
    load_pipeline_folder,
)
from videodag_service.dag.registry import entry_point_plugins

PLUGIN_SOURCE = '''
"""A third-party videodag plugin: scales the frame index."""
from videodag_service.dag import Param, Plugin, Port, function_tool


def _scale(inputs, params):
    return {"scaled": inputs["index"] * params["factor"]}


PLUGIN = Plugin(
    name="thirdparty",
    description="Installed from another package.",
    tools=(
        function_tool(
            "scale", _scale,
            description="index times factor",
            inputs=(Port("index"),),
            outputs=(Port("scaled"),),
            params=(Param("factor", int, 2),),
        ),
    ),
)
'''


def pip_install(package_dir: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(package_dir)],
        check=True,
        capture_output=True,
    )


def make_package(root: Path, name: str, entry_point_value: str, source: str) -> Path:
    package_dir = root / name
    module = package_dir / name
    module.mkdir(parents=True)
    (module / "__init__.py").write_text(source)
    (package_dir / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name.replace('_', '-')}"
        version = "1.0"

        [project.entry-points."videodag.plugins"]
        {name} = "{entry_point_value}"
    """))
    return package_dir


@pytest.fixture
def installed_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    yield site
    importlib.invalidate_caches()


def test_installed_plugin_is_discovered_and_runs(tmp_path: Path, installed_site: Path) -> None:
    pip_install(make_package(tmp_path, "videodag_thirdparty", "videodag_thirdparty:PLUGIN", PLUGIN_SOURCE),
                installed_site)
    importlib.invalidate_caches()
    assert [plugin.name for plugin in entry_point_plugins()] == ["thirdparty"]

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "scaled.yaml").write_text(textwrap.dedent("""
        id: scaled
        version: "1"
        nodes:
          - id: scale
            plugin: thirdparty.scale
            params: {factor: 3}
            inputs: {index: frame.index}
        outputs:
          value: scale.scaled
    """))
    service = DagPipelineService(load_pipeline_folder(pipelines, default_registry()))
    assert service.run_pipeline("scaled", {"frame_index": 14}) == {"value": 42}


def test_broken_entry_point_stops_registration_with_its_name(tmp_path: Path, installed_site: Path) -> None:
    pip_install(make_package(tmp_path, "videodag_broken", "videodag_broken:MISSING", "VALUE = 1\n"),
                installed_site)
    importlib.invalidate_caches()
    with pytest.raises(PluginRegistryError, match="plugin entry point 'videodag_broken'"):
        entry_point_plugins()


def test_an_entry_point_to_something_else_is_named_with_what_it_gave(tmp_path: Path, installed_site: Path) -> None:
    pip_install(make_package(tmp_path, "videodag_odd", "videodag_odd:SETTINGS", "SETTINGS = {'a': 1}\n"),
                installed_site)
    importlib.invalidate_caches()
    with pytest.raises(PluginRegistryError, match=r"plugin entry point 'videodag_odd' \(videodag_odd:SETTINGS\) gave "
                                                  r"dict, not a videodag Plugin nor a callable returning one"):
        entry_point_plugins()


def test_a_plugin_named_as_a_built_in_one_is_refused_naming_both(tmp_path: Path, installed_site: Path) -> None:
    clashing = PLUGIN_SOURCE.replace('name="thirdparty"', 'name="stats"')
    pip_install(make_package(tmp_path, "videodag_clash", "videodag_clash:PLUGIN", clashing), installed_site)
    importlib.invalidate_caches()
    with pytest.raises(PluginRegistryError, match=r"two plugins are named 'stats': the built-in "
                                                  r"videodag_service\.plugins\.stats and plugin entry point "
                                                  r"'videodag_clash' \(videodag_clash:PLUGIN\); a pipeline could not"):
        default_registry()


def test_something_other_than_a_plugin_is_refused_saying_what_it_is() -> None:
    from videodag_service.dag import PluginRegistry
    from videodag_service.plugins import stats

    with pytest.raises(PluginRegistryError, match=r"<module 'videodag_service.plugins.stats'.* \(from here\) is a "
                                                  r"module, not a videodag Plugin"):
        PluginRegistry([stats], ["from here"])
    assert PluginRegistry([stats.PLUGIN], ["one", "two"]).plugin_names() == ["stats"]
