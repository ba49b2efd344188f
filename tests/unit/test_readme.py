"""The README's commands and examples (and the client's), checked against the code they describe.

A newcomer copies them as they stand: a renamed flag, pipeline or method must fail here,
not in their terminal. Commands are read from the ```bash blocks (continued lines joined,
comments dropped) and from inline code spans that start with the command's name and give it
arguments.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

import videodag_client
from videodag.v1 import video_pipeline_service_pb2
from videodag_client import AsyncVideodagClient, VideodagClient
from videodag_client.cli import build_parser
from videodag_service.dag import BUILTIN_PIPELINE_DIR
from videodag_service.dag.loader import load_pipeline_file, load_pipeline_folder
from videodag_service.dag.registry import default_registry
from videodag_service.jobs.worker_command import build_parser as worker_parser
from videodag_service.server_arguments import settings_from
from videodag_service.settings import SettingsError

README = Path(__file__).resolve().parents[2] / "README.md"
_SERVICE = video_pipeline_service_pb2.DESCRIPTOR.services_by_name["VideoPipelineService"]


def readme() -> str:
    return README.read_text(encoding="utf-8")


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", readme(), flags=re.MULTILINE | re.DOTALL)


def commands(program: str) -> list[list[str]]:
    """Every invocation of `program` in a bash block or an inline code span, as its arguments."""
    lines = [line for block in fenced_blocks("bash") for line in block.replace("\\\n", " ").splitlines()]
    # Inline spans with arguments: `videodag run` alone names the command, it is no invocation.
    lines += re.findall(r"`((?:\.venv/bin/)?" + re.escape(program) + r" [^`\s]+ [^`]+)`", readme())
    found = []
    for line in lines:
        words = shlex.split(line, comments=True)
        if words and words[0] in (program, f".venv/bin/{program}"):
            found.append(words[1:])
    return found


def test_every_videodag_command_in_the_readme_parses() -> None:
    invocations = commands("videodag")
    used = {arguments[0] for arguments in invocations}
    assert {"run", "pipelines", "submit", "watch", "jobs", "cancel", "render"} <= used
    for arguments in invocations:
        try:
            build_parser().parse_args(arguments)
        except SystemExit:
            pytest.fail(f"README command does not parse: videodag {shlex.join(arguments)}")


def test_every_server_command_in_the_readme_is_accepted() -> None:
    invocations = commands("videodag-server")
    assert invocations
    for arguments in invocations:
        try:
            settings_from(arguments)
        except (SettingsError, SystemExit) as error:
            pytest.fail(f"README server command refused: videodag-server {shlex.join(arguments)}: {error}")


def test_every_worker_command_in_the_readme_parses() -> None:
    invocations = commands("videodag-worker")
    assert invocations
    for arguments in invocations:
        try:
            worker_parser().parse_args(arguments)
        except SystemExit:
            pytest.fail(f"README worker command does not parse: videodag-worker {shlex.join(arguments)}")


def test_the_pipelines_the_readme_and_the_client_docs_name_are_the_built_in_ones() -> None:
    built_in = set(load_pipeline_folder(BUILTIN_PIPELINE_DIR, default_registry()))
    text = "\n".join((readme(), videodag_client.__doc__ or "", VideodagClient.__doc__ or ""))
    named = set(re.findall(r"--pipeline (\w+)", text)) | set(re.findall(r'"pipeline_id": "(\w+)"', text))
    named |= set(re.findall(r'upload_and_run\("[^"]+", "(\w+)"', text))
    assert named and named <= built_in
    table = set(re.findall(r"^\| `(\w+)` \|", readme(), flags=re.MULTILINE))
    assert table == built_in, "the pipeline table lists every built-in pipeline, and only those"


def test_the_methods_the_readme_calls_exist() -> None:
    called = set(re.findall(rf"{re.escape(_SERVICE.full_name)}/(\w+)", readme()))
    assert {"UploadAndRun", "ListPipelines"} <= called
    assert called <= set(_SERVICE.methods_by_name)


def test_the_example_pipeline_file_loads(tmp_path: Path) -> None:
    (example,) = [block for block in fenced_blocks("yaml") if "nodes:" in block]
    pipeline_id = yaml.safe_load(example)["id"]
    path = tmp_path / f"{pipeline_id}.yaml"
    path.write_text(example)
    spec = load_pipeline_file(path, default_registry())
    assert [node.id for node in spec.nodes] == ["detect", "track"]
    # It is the built-in pipeline of its name, as shipped: a reader copying it gets what the server runs.
    shipped = load_pipeline_file(BUILTIN_PIPELINE_DIR / f"{pipeline_id}.yaml", default_registry())
    assert (spec.version, spec.outputs) == (shipped.version, shipped.outputs)
    assert [(n.id, n.plugin_ref, n.params, n.inputs, n.on_error) for n in spec.nodes] == [
        (n.id, n.plugin_ref, n.params, n.inputs, n.on_error) for n in shipped.nodes
    ]


def test_the_client_methods_the_readme_calls_exist() -> None:
    python = "\n".join(fenced_blocks("python"))
    blocking = set(re.findall(r"(?<!await )client\.(\w+)\(", python))
    awaited = set(re.findall(r"await client\.(\w+)\(", python))
    assert {"upload_and_run"} <= blocking and {"submit_job"} <= awaited
    assert all(hasattr(VideodagClient, name) for name in blocking | awaited)
    assert all(hasattr(AsyncVideodagClient, name) for name in awaited | {"upload_and_run", "watch_job"})


def test_the_plugin_testing_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    (example,) = [block for block in fenced_blocks("python") if "FramePayload" in block]
    exec(compile(example, "README.md", "exec"), {})  # the README's own example
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and all(line.startswith("{") for line in printed)


def _github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def test_every_link_within_the_readme_reaches_a_heading() -> None:
    prose = re.sub(r"^```.*?^```", "", readme(), flags=re.MULTILINE | re.DOTALL)
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", prose, flags=re.MULTILINE):
        anchor = _github_anchor(heading)
        anchors.add(f"{anchor}-{seen[anchor]}" if anchor in seen else anchor)  # GitHub numbers repeats
        seen[anchor] = seen.get(anchor, 0) + 1
    links = re.findall(r"\]\(#([^)]+)\)", prose)
    assert len(links) > 20 and "draining" in links
    assert [link for link in links if link not in anchors] == []
