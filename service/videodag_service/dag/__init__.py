"""The DAG engine: pipeline files, validation, the plugin registry and per-video runs.

It knows nothing of gRPC or video files: it takes frames as payload mappings.
"""

from videodag_service.dag.executor import PipelineRun
from videodag_service.dag.json_like import to_json_like
from videodag_service.dag.loader import PipelineFileError, load_pipeline_file, load_pipeline_folder
from videodag_service.dag.node_timings import NodeTiming
from videodag_service.dag.params import REQUIRED, InvalidParams, Param
from videodag_service.dag.plugin import Plugin, Tool, ToolInstance, function_tool
from videodag_service.dag.ports import PORT_KINDS, Port, kinds_compatible
from videodag_service.dag.registry import (
    ENTRY_POINT_GROUP,
    PluginRegistry,
    PluginRegistryError,
    builtin_plugins,
    default_registry,
)
from videodag_service.dag.resolved_params import ResolvedParams, resolve_params
from videodag_service.dag.service import BUILTIN_PIPELINE_DIR, DagPipelineService
from videodag_service.dag.spec import ErrorPolicy, NodeSpec, PipelineSpec, SourceRef

__all__ = [
    "BUILTIN_PIPELINE_DIR",
    "ENTRY_POINT_GROUP",
    "PORT_KINDS",
    "REQUIRED",
    "DagPipelineService",
    "ErrorPolicy",
    "InvalidParams",
    "NodeSpec",
    "NodeTiming",
    "Param",
    "PipelineFileError",
    "PipelineRun",
    "PipelineSpec",
    "Plugin",
    "PluginRegistry",
    "PluginRegistryError",
    "Port",
    "ResolvedParams",
    "SourceRef",
    "Tool",
    "ToolInstance",
    "builtin_plugins",
    "default_registry",
    "function_tool",
    "kinds_compatible",
    "load_pipeline_file",
    "load_pipeline_folder",
    "resolve_params",
    "to_json_like",
]
