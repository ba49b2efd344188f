"""The contract guard: `scripts/check_contract.sh` runs buf lint, then buf breaking against the
released contract (`protos/released_contract.binpb`) and against main.

Besides the repository itself passing, a scratch git repository with a copy of the contract
shows the guard failing on a breaking change, committed or not, and on a lint violation.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from ecosystem_tools import REPO_ROOT, ensure_node_deps

SCRIPT = Path("scripts") / "check_contract.sh"


def run_check(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ensure_node_deps()
    return subprocess.run(["bash", str(repo / SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
                   cwd=repo, check=True, capture_output=True, timeout=60)


@pytest.fixture
def scratch_repo(tmp_path: Path) -> Path:
    """A git repository whose main branch holds a copy of today's contract and the guard."""
    ensure_node_deps()
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for script in ("check_contract.sh", "ensure_node_deps.sh"):
        shutil.copy2(REPO_ROOT / "scripts" / script, repo / "scripts" / script)
    shutil.copytree(REPO_ROOT / "protos", repo / "protos", ignore=shutil.ignore_patterns("gen"))
    (repo / "tools" / "buf").mkdir(parents=True)
    (repo / "tools" / "buf" / "node_modules").symlink_to(REPO_ROOT / "tools" / "buf" / "node_modules")
    git(repo, "init", "--quiet", "--initial-branch=main")
    git(repo, "add", "scripts", "protos")
    git(repo, "commit", "--quiet", "-m", "contract")
    return repo


def test_the_repository_contract_passes_lint_and_breaking() -> None:
    completed = run_check(REPO_ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "==> buf lint" in completed.stdout
    assert "==> buf breaking against the released contract" in completed.stdout
    assert "==> buf breaking against main" in completed.stdout


def test_an_unchanged_contract_passes(scratch_repo: Path) -> None:
    completed = run_check(scratch_repo)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "nothing breaking against the released contract or main" in completed.stdout


def test_changing_a_field_type_is_caught_as_breaking(scratch_repo: Path) -> None:
    run_proto = scratch_repo / "protos" / "videodag" / "v1" / "run.proto"
    original = run_proto.read_text()
    assert "  int32 frame_stride = 1;" in original
    run_proto.write_text(original.replace("  int32 frame_stride = 1;", "  int64 frame_stride = 1;"))

    completed = run_check(scratch_repo)
    assert completed.returncode != 0
    assert "frame_stride" in completed.stdout + completed.stderr
    assert "nothing breaking" not in completed.stdout


def test_a_breaking_change_committed_on_main_is_caught_against_the_released_contract(scratch_repo: Path) -> None:
    """CI runs on a clone of main, where comparing with main compares the contract with itself."""
    run_proto = scratch_repo / "protos" / "videodag" / "v1" / "run.proto"
    run_proto.write_text(run_proto.read_text().replace("  string sha256 = 5;\n", ""))
    git(scratch_repo, "commit", "--quiet", "-am", "drop sha256")

    completed = run_check(scratch_repo)
    assert completed.returncode != 0
    assert "sha256" in completed.stdout + completed.stderr
    assert "==> buf breaking against main" not in completed.stdout


def test_a_recorded_release_is_the_new_baseline_and_another_ref_still_guards(scratch_repo: Path) -> None:
    git(scratch_repo, "tag", "v1")
    run_proto = scratch_repo / "protos" / "videodag" / "v1" / "run.proto"
    run_proto.write_text(run_proto.read_text().replace("  string sha256 = 5;\n", ""))
    assert run_check(scratch_repo, "--record-release").returncode == 0  # a breaking release, deliberately
    git(scratch_repo, "commit", "--quiet", "-am", "drop sha256, released")

    assert run_check(scratch_repo).returncode == 0
    completed = run_check(scratch_repo, "v1")
    assert completed.returncode != 0
    assert "sha256" in completed.stdout + completed.stderr


def test_a_missing_released_contract_fails_the_check(scratch_repo: Path) -> None:
    (scratch_repo / "protos" / "released_contract.binpb").unlink()
    completed = run_check(scratch_repo)
    assert completed.returncode == 1
    assert "protos/released_contract.binpb is missing" in completed.stderr


def test_a_lint_violation_fails_before_any_comparison(scratch_repo: Path) -> None:
    pipeline_proto = scratch_repo / "protos" / "videodag" / "v1" / "pipeline.proto"
    pipeline_proto.write_text(pipeline_proto.read_text() + "\nmessage bad_message_name {}\n")

    completed = run_check(scratch_repo)
    assert completed.returncode != 0
    assert "bad_message_name" in completed.stdout + completed.stderr
    assert "==> buf breaking" not in completed.stdout


def test_a_ref_without_a_contract_has_nothing_to_break(scratch_repo: Path) -> None:
    git(scratch_repo, "checkout", "--quiet", "--orphan", "empty")
    git(scratch_repo, "rm", "-r", "--cached", "--quiet", "protos")
    git(scratch_repo, "commit", "--quiet", "--allow-empty", "-m", "no contract")
    git(scratch_repo, "checkout", "--quiet", "-f", "main")

    completed = run_check(scratch_repo, "empty")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "has no contract under protos/videodag yet" in completed.stdout
    missing = run_check(scratch_repo, "no-such-branch")
    assert missing.returncode == 0 and "no git ref 'no-such-branch'" in missing.stdout
