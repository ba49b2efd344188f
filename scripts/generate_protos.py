"""Regenerate the Python code for the contract in protos/videodag/v1.

One command rebuilds everything under protos/gen/python; nobody edits those files.
`--check` regenerates into a scratch folder and fails when the committed code differs,
which is how CI catches a .proto changed without regenerating.

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
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from google.rpc import status_pb2
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
GENERATED_ROOT = PROTO_ROOT / "gen" / "python"
PACKAGE_DIR = Path("videodag") / "v1"
DESCRIPTOR_SET_NAME = "descriptor_set.binpb"


def _include_dirs() -> list[Path]:
    """The contract's own root, protobuf's well-known types and google.rpc's protos."""
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    google_rpc_root = Path(status_pb2.__file__).resolve().parent.parent.parent
    return [PROTO_ROOT, well_known, google_rpc_root]


def generate(out_dir: Path) -> None:
    """Run protoc with the Python, gRPC and typed-stub plugins into `out_dir`."""
    (out_dir / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)  # protoc makes no folder for the descriptor set
    proto_files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    scripts_dir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        *(f"-I{d}" for d in _include_dirs()),
        # The typed-stub plugins are console scripts beside this interpreter.
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
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # Package markers so the generated code imports as `videodag.v1`.
    for package in (out_dir / "videodag", out_dir / PACKAGE_DIR):
        (package / "__init__.py").write_text('"""Generated code for the videodag contract; do not edit."""\n')
        (package / "py.typed").write_text("")


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
