"""Regenerate the Python code for the contract in protos/videodag/v1.

One command rebuilds everything under protos/gen/python; nobody edits those files.
`--check` regenerates into a scratch folder and fails when the committed code differs,
which is how CI catches a .proto changed without regenerating.

The code comes from an old protoc on purpose. Generated code needs a protobuf and a grpcio at
least as new as the protoc that wrote it, and the client ships this code: written by today's
protoc, it would refuse every service still held to protobuf 5 or 6 (by TensorFlow's pins, say).
So protoc runs from `GRPCIO_TOOLS`, installed into a venv of its own under `.tools/` on first
use (its protobuf 5 cannot share the dev venv's), and pyproject's floors for protobuf, grpcio and
grpcio-status are the versions its code names. Newer runtimes load older code.

Beside the code goes `descriptor_set.binpb`: the contract's own files as protoc read them,
comments included (`--include_source_info`), for server reflection to hand to tools such as
grpcurl. The descriptors compiled into the `_pb2` modules carry no comments, so without it
`grpcurl describe` shows bare signatures where the .proto files explain how to call each
method. Imports are left out: reflection serves those from the modules that define them.

    python scripts/generate_protos.py          # write protos/gen/python
    python scripts/generate_protos.py --check  # exit 1 if the committed code is stale
"""

from __future__ import annotations

import argparse
import fcntl
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
GOOGLEAPIS_ROOT = PROTO_ROOT / "third_party" / "googleapis"
GENERATED_ROOT = PROTO_ROOT / "gen" / "python"
PACKAGE_DIR = Path("videodag") / "v1"
DESCRIPTOR_SET_NAME = "descriptor_set.binpb"
GRPCIO_TOOLS = "grpcio-tools==1.66.2"
# What it needs, pinned too, from wheels only: a Python without them fails at once, not after a
# long build from source.
TOOLS_REQUIREMENTS = (GRPCIO_TOOLS, "grpcio==1.66.2", "protobuf==5.27.2")
GENERATED_DOCSTRING = "Generated code for the videodag contract; do not edit."
TOOLS_ROOT = REPO_ROOT / ".tools"
TOOLS_VENV = TOOLS_ROOT / GRPCIO_TOOLS.replace("==", "-")


def _protoc_python() -> Path:
    """The interpreter of the venv holding `GRPCIO_TOOLS`, made on first use.

    One run at a time makes it (a lock), and a venv counts only once protoc loads from it: one
    whose install was cut short, or whose base Python has gone, is made again."""
    python = TOOLS_VENV / "bin" / "python"
    TOOLS_ROOT.mkdir(exist_ok=True)
    with (TOOLS_ROOT / f"{TOOLS_VENV.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _loads_protoc(python):
            return python
        shutil.rmtree(TOOLS_VENV, ignore_errors=True)
        print(f"installing {GRPCIO_TOOLS} into {TOOLS_VENV.relative_to(REPO_ROOT)}", file=sys.stderr)
        installed = (subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=False).returncode == 0
                     and subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                         "--only-binary=:all:", *TOOLS_REQUIREMENTS],
                                        check=False, stdin=subprocess.DEVNULL).returncode == 0)
        if not installed or not _loads_protoc(python):
            raise SystemExit(f"could not install {GRPCIO_TOOLS} into {TOOLS_VENV}: it needs the package index, and "
                             f"a Python it has wheels for (3.11 to 3.13; this is {sys.version.split()[0]})")
        return python


def _loads_protoc(python: Path) -> bool:
    try:
        loaded = subprocess.run([str(python), "-c", "import grpc_tools.protoc"], check=False, capture_output=True)
    except OSError:  # no interpreter there, or a link to one that has gone
        return False
    return loaded.returncode == 0


def generate(out_dir: Path) -> None:
    """Run protoc with the Python, gRPC and typed-stub plugins into `out_dir`."""
    (out_dir / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)  # protoc makes no folder for the descriptor set
    proto_files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    scripts_dir = Path(sys.executable).parent
    command = [
        # Run as a module, grpc_tools.protoc adds protobuf's well-known types to the include path.
        str(_protoc_python()), "-m", "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{GOOGLEAPIS_ROOT}",
        # The typed-stub plugins are console scripts beside this interpreter; what they write
        # is only read by type checkers, so their version sets no floor.
        f"--plugin=protoc-gen-mypy={scripts_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={scripts_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        "--include_source_info",
        f"--descriptor_set_out={out_dir / PACKAGE_DIR / DESCRIPTOR_SET_NAME}",
        *proto_files,
    ]
    if subprocess.run(command, check=False, cwd=REPO_ROOT).returncode != 0:
        raise SystemExit("protoc failed")
    # Package markers so the generated code imports as `videodag.v1`.
    (out_dir / "videodag" / "__init__.py").write_text(f'"""{GENERATED_DOCSTRING}"""\n')
    (out_dir / PACKAGE_DIR / "__init__.py").write_text(_version_package_init(proto_files))
    for package in (out_dir / "videodag", out_dir / PACKAGE_DIR):
        (package / "py.typed").write_text("")


def _version_package_init(proto_files: list[str]) -> str:
    """`videodag.v1`'s __init__: it silences protobuf 6.30's and 6.31's warning that code made for
    protobuf 5 is a major version older (their other releases, 6.32 on and 7 included, load it
    without a word), then imports the messages. Left alone, the warning came four times at every
    client's start and failed `python -W error`. The filter stays, for these files only: a
    `catch_warnings` around the imports would restore, on leaving, the filters of any thread
    that changed them meanwhile."""
    modules = ", ".join(Path(name).stem + "_pb2" for name in proto_files)
    return f'''"""{GENERATED_DOCSTRING}

The messages are imported here, once protobuf 6.30's and 6.31's warning that this code, made
for protobuf 5, is a major version older is silenced: see scripts/generate_protos.py.
"""

import warnings as _warnings

_warnings.filterwarnings(
    "ignore",
    message=r"Protobuf gencode version 5\\.\\S+ is exactly one major version older than the runtime "
    r"version 6\\.\\S+ at videodag/v1/",
    category=UserWarning,
)
from videodag.v1 import {modules}  # noqa: E402, F401
'''


def _differences(left: Path, right: Path) -> list[str]:
    comparison = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(prefix + name for name in cmp.left_only + cmp.right_only + cmp.diff_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{prefix}{name}/")

    walk(comparison, "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed generated code is stale")
    arguments = parser.parse_args()
    if not arguments.check:
        shutil.rmtree(GENERATED_ROOT / "videodag", ignore_errors=True)
        generate(GENERATED_ROOT)
        print(f"generated {GENERATED_ROOT.relative_to(REPO_ROOT)}/videodag")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        generate(Path(scratch))
        stale = _differences(GENERATED_ROOT / "videodag", Path(scratch) / "videodag")
    if stale:
        print("generated code is stale; run: python scripts/generate_protos.py", file=sys.stderr)
        for name in stale:
            print(f"  differs: {name}", file=sys.stderr)
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
