"""The server refuses to start on an upload or data folder any local user could have planted.

In /tmp anyone can make /tmp/videodag, or a folder above a nested path, first; its owner
could then read the job store and forge results, or swap an upload for a link to a file only
the server may read and have its frames sent back. Tests run as root here, so another user
is simulated by handing folders to `nobody` (uid 65534), and /tmp by a sticky world-writable
folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from fakes.logs import why_it_ended
from videodag_client import FrameResult, Internal, VideodagClient
from videodag_service.dag import DagPipelineService
from videodag_service.private_folders import FolderNotPrivate, private_directory
from videodag_service.server import main, start_server
from videodag_service.server_arguments import settings_from

OTHER_UID = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user takes root")


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A folder where any user may make entries, as /tmp is."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def _planted(folder: Path, mode: int = 0o700) -> Path:
    folder.mkdir(mode=mode)
    folder.chmod(mode)
    os.chown(folder, OTHER_UID, OTHER_UID)
    return folder


def _start(temp_dir: Path, data_dir: Path) -> None:
    settings = settings_from(["--port", "0", "--temp-dir", str(temp_dir)], {"VIDEODAG_DATA_DIR": str(data_dir)})
    running = start_server(settings, DagPipelineService.from_folder())
    running.stop(0)


def test_an_upload_folder_another_user_made_first_is_refused(tmp_path: Path, shared_tmp: Path) -> None:
    temp_dir = _planted(shared_tmp / "videodag")
    with pytest.raises(FolderNotPrivate, match=rf"upload folder \(--temp-dir\) {temp_dir}: {temp_dir} is a folder "
                                               r"owned by nobody \(uid 65534\), made where any user may make one"):
        _start(temp_dir, tmp_path / "data")
    # Refused before anything was served: a second start on the same data folder finds no lock held.
    _start(tmp_path / "own", tmp_path / "data")


def test_a_data_folder_another_user_made_first_is_refused_before_its_files_are_opened(
    tmp_path: Path, shared_tmp: Path
) -> None:
    data_dir = shared_tmp / "videodag-data"
    data_dir.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    (data_dir / "jobs.lock").symlink_to(victim)  # what made the server create a file anywhere
    os.chown(data_dir, OTHER_UID, OTHER_UID)
    with pytest.raises(FolderNotPrivate, match=r"job data folder \(--data-dir\) .* is a folder owned by nobody"):
        _start(tmp_path / "uploads", data_dir)
    assert not victim.exists()


@pytest.mark.parametrize("planted", ["folder", "sticky folder", "link"])
def test_a_path_below_a_planted_folder_or_link_is_refused_too(tmp_path: Path, shared_tmp: Path, planted: str) -> None:
    """Whoever controls a folder on the way can rename what is below it: every step is looked at."""
    if planted == "link":
        target = tmp_path / "ours"
        target.mkdir()
        above = shared_tmp / "app"
        above.symlink_to(target)
        os.lchown(above, OTHER_UID, OTHER_UID)
    else:
        above = _planted(shared_tmp / "app", 0o1777 if planted == "sticky folder" else 0o755)
        (above / "data").mkdir()
    kind = "symbolic link" if planted == "link" else "folder"
    with pytest.raises(FolderNotPrivate, match=rf"{above} is a {kind} owned by nobody \(uid 65534\), made where"):
        private_directory(above / "data" / "deeper", "job data folder (--data-dir)")


def test_a_link_another_user_owns_is_refused_even_to_a_folder_of_ours(tmp_path: Path, shared_tmp: Path) -> None:
    ours = tmp_path / "ours"
    ours.mkdir(mode=0o700)
    link = shared_tmp / "videodag"
    link.symlink_to(ours)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(FolderNotPrivate, match="is a symbolic link owned by nobody"):
        private_directory(link, "upload folder (--temp-dir)")
    own_link = tmp_path / "own-link"
    own_link.symlink_to(ours)
    assert private_directory(own_link) == own_link


def test_a_folder_anyone_may_write_to_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Kubernetes emptyDir is root's, mode 0777, in a pod where the server's user is the only one."""
    volume = tmp_path / "empty-dir"
    volume.mkdir()
    volume.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="videodag_service.private_folders"):
        assert private_directory(volume / "data", "job data folder (--data-dir)") == volume / "data"
        assert private_directory(volume / "data" / "uploads") == volume / "data" / "uploads"
    [warning] = [record.getMessage() for record in caplog.records]  # once, though checked twice
    assert f"every user may add, rename and remove entries in {volume} (mode 0777)" in warning
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp: others cannot rename or remove what is not theirs
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="videodag_service.private_folders"):
        assert private_directory(sticky) == sticky
    assert caplog.records == []


def test_a_root_owned_folder_is_trusted(tmp_path: Path) -> None:
    """A container's volume is often root's, shared with the server's group."""
    volume = tmp_path / "volume"
    volume.mkdir(mode=0o2775)
    os.chown(volume, 0, OTHER_UID)
    assert private_directory(volume) == volume


def test_another_users_folder_an_administrator_prepared_is_served_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Outside a place anyone may write to (a bind mount, a group-shared volume), only someone
    trusted with the machine could have put it there: it serves, naming its owner."""
    prepared = tmp_path / "srv" / "videodag-data"
    prepared.mkdir(parents=True, mode=0o770)
    os.chown(prepared, OTHER_UID, 0)
    with caplog.at_level(logging.WARNING, logger="videodag_service.private_folders"):
        assert private_directory(prepared, "job data folder (--data-dir)") == prepared
    [warning] = [record.getMessage() for record in caplog.records]
    assert f"job data folder (--data-dir) {prepared}: {prepared} is a folder owned by nobody (uid 65534)" in warning


def test_a_path_that_is_no_folder_is_named_as_such(tmp_path: Path) -> None:
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FolderNotPrivate, match=rf"upload folder \(--temp-dir\) {dangling}: {dangling} is not a folder"):
        private_directory(dangling, "upload folder (--temp-dir)")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(FolderNotPrivate, match=rf"{a_file / 'data'}: {a_file} is not a folder"):
        private_directory(a_file / "data", "job data folder (--data-dir)")


def test_a_path_with_dot_dot_is_refused_plainly(tmp_path: Path) -> None:
    """Read as written, `..` after a link would send the walk elsewhere than the kernel goes."""
    with pytest.raises(FolderNotPrivate, match=r"give it without '\.\.'"):
        private_directory(tmp_path / "current" / ".." / "shared", "job data folder (--data-dir)")
    assert list(tmp_path.iterdir()) == []


def test_nothing_is_made_inside_a_planted_folder_before_it_is_refused(shared_tmp: Path) -> None:
    """A folder another user planted 0755 used to be named only by mkdir's "Permission denied"."""
    planted = _planted(shared_tmp / "app", 0o1777)
    with pytest.raises(FolderNotPrivate, match=rf"{planted / 'x' / 'data'}: {planted} is a folder owned by nobody"):
        private_directory(planted / "x" / "data", "job data folder (--data-dir)")
    assert list(planted.iterdir()) == []


def test_folders_made_on_the_way_are_private_too(tmp_path: Path) -> None:
    made = private_directory(tmp_path / "a" / "b" / "c")
    assert {oct((tmp_path / name).stat().st_mode & 0o777) for name in ("a", "a/b", "a/b/c")} == {oct(0o700)}
    assert made.is_dir()


def test_the_command_says_why_it_does_not_start_and_leaves_no_folder_it_made(
    tmp_path: Path, shared_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = _planted(shared_tmp / "videodag-data")
    temp_dir = tmp_path / "made" / "for" / "uploads"
    assert main(["--port", "0", "--temp-dir", str(temp_dir), "--data-dir", str(data_dir)]) == 1
    said = capsys.readouterr().err
    assert why_it_ended(said).startswith(f"cannot start: job data folder (--data-dir) {data_dir}: {data_dir} is "
                           "a folder owned by nobody")
    assert "give the server a folder its own user (or root) made" in said
    assert not (tmp_path / "made").exists()


def test_an_upload_folder_planted_while_the_server_runs_receives_no_upload(
    tmp_path: Path, shared_tmp: Path, make_video: Any
) -> None:
    """A tmp cleaner removes the idle server's folder; another user makes it again first."""
    temp_dir = shared_tmp / "videodag"
    settings = settings_from(["--port", "0", "--temp-dir", str(temp_dir)], {"VIDEODAG_DATA_DIR": str(tmp_path / "d")})
    running = start_server(settings, DagPipelineService.from_folder())
    try:
        video = make_video(3)
        with VideodagClient(f"127.0.0.1:{running.port}") as client:
            assert len([e for e in client.upload_and_run(video, "frame_stats_v1") if isinstance(e, FrameResult)]) == 3
            temp_dir.rmdir()
            _planted(temp_dir, 0o1777)
            with pytest.raises(Internal) as refused:
                list(client.upload_and_run(video, "frame_stats_v1"))
        assert refused.value.reason == "STORAGE_UNWRITABLE"
        assert "upload folder was replaced by one it does not trust" in refused.value.message
        assert str(temp_dir) not in refused.value.message  # the server's paths are its own: they go to its log
        assert list(temp_dir.iterdir()) == []
    finally:
        running.stop(0)


def test_a_job_upload_folder_planted_while_the_server_runs_receives_no_upload_and_names_no_path(
    tmp_path: Path, shared_tmp: Path, make_video: Any
) -> None:
    """As for UploadAndRun: SubmitJob answered a bare INTERNAL "FolderNotPrivate: job upload
    folder ...: <the data folder> is a folder owned by nobody", with a traceback in the log."""
    data_dir = shared_tmp / "videodag-data"
    settings = settings_from(["--port", "0", "--temp-dir", str(tmp_path / "t")], {"VIDEODAG_DATA_DIR": str(data_dir)})
    running = start_server(settings, DagPipelineService.from_folder())
    try:
        video = make_video(3)
        with VideodagClient(f"127.0.0.1:{running.port}") as client:
            client.submit_job(video, "frame_stats_v1")
            data_dir.rename(tmp_path / "moved")  # a cleaner took it; another user makes it again first
            _planted(data_dir, 0o1777)
            with pytest.raises(Internal) as refused:
                client.submit_job(video, "frame_stats_v1")
        assert refused.value.reason == "STORAGE_UNWRITABLE"
        assert "upload folder was replaced by one it does not trust" in refused.value.message
        assert str(shared_tmp) not in refused.value.message
        assert [path for path in data_dir.rglob("*") if path.is_file()] == []
    finally:
        running.stop(0)
