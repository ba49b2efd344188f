"""Names written beside an output while it is made fit the file system whatever the output's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from videodag_client._file_names import beside
from videodag_client.cli._results import JsonLinesOutput


def test_a_name_with_room_gets_its_prefix_and_suffix(tmp_path: Path) -> None:
    assert beside(str(tmp_path / "r.jsonl"), ".", ".part") == str(tmp_path / ".r.jsonl.part")


@pytest.mark.parametrize("name", ["r" * 246 + ".jsonl", "é" * 123 + ".jsonl", "r" * 236 + "\udce9" * 10 + ".jsonl"],
                         ids=["ascii", "utf-8", "not-utf-8"])
def test_a_name_too_long_for_its_suffix_is_cut_and_marked(tmp_path: Path, name: str) -> None:
    output = tmp_path / name
    output.write_bytes(b"")  # the output itself is a legal name
    part = beside(str(output), "", ".part")
    assert len(os.fsencode(os.path.basename(part))) <= 255 and part.endswith(".part")
    assert part == beside(str(output), "", ".part"), "the same each time: an interrupted run's part is found"
    assert part != beside(str(output)[:-1] + "x", "", ".part"), "names sharing a start get parts of their own"
    Path(part).write_bytes(b"")  # the file system takes it


def test_results_to_a_name_with_no_room_for_part_are_written(tmp_path: Path) -> None:
    """A legal 252-byte name failed with 'File name too long' on its `.part`, a usage error."""
    final = tmp_path / ("r" * 246 + ".jsonl")
    with JsonLinesOutput(str(final)) as output:
        assert output.part_path is not None and output.part_path != f"{final}.part"
    assert final.exists() and not Path(output.part_path).exists()


def test_a_rendered_video_with_a_long_name_is_first_written_under_a_name_that_fits(tmp_path: Path) -> None:
    from videodag_client._opencv_files import partial_name

    partial = partial_name(tmp_path / ("v" * 248 + ".mp4"))
    assert partial.name.startswith(".v") and partial.name.endswith(".partial.mp4")
    assert len(os.fsencode(partial.name)) <= 255


def test_under_a_latin1_locale_a_name_that_is_not_ascii_reaches_opencv_through_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenCV takes names as UTF-8: there, `café.mp4` is Latin-1 bytes on disk, which its UTF-8
    does not name (`render` said "cannot open video", and left a `.annotÃ©.partial.mp4`)."""
    from videodag_client._opencv_files import OpenCvNames, opencv_takes, partial_name, plain_name

    video = tmp_path / "café.mp4"
    video.write_bytes(b"")
    assert opencv_takes(str(video)) and plain_name("café") == "café"  # UTF-8 file names: as they are
    monkeypatch.setattr(os, "fsencode", lambda name: os.fspath(name).encode("latin-1", "surrogateescape"))
    assert not opencv_takes(str(video))
    assert plain_name("café") == "caf?"
    assert partial_name(tmp_path / "annoté.mp4").name.startswith(".annot?~")
    with OpenCvNames() as names:
        linked = names.of(video)
        assert linked != str(video) and linked.isascii() and os.path.samefile(linked, video)
