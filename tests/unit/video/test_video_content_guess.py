"""What a file OpenCV cannot open looks like: real audio from FFmpeg, documents, archives, text."""

from __future__ import annotations

import os
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fakes.hostile_media import claim_avi_frame_size, riff_chunks
from fakes.media import ffmpeg_executable, write_test_pattern, write_tone
from videodag_service.media import mp4_boxes
from videodag_service.media.mp4_boxes import first_video_track
from videodag_service.video.content_guess import ContentGuess, guess_content
from videodag_service.video.edit_list import shown_seconds


@pytest.mark.parametrize(
    ("name", "options", "detected_type", "reason"),
    [
        ("song.mp3", (), "audio/mpeg", "it is MP3 audio (audio/mpeg), with no video stream"),
        ("song.m4a", (), "audio/mp4", "it is M4A audio (audio/mp4), with no video stream"),
        ("song.wav", (), "audio/x-wav", "it is WAV audio (audio/x-wav), with no video stream"),
        ("song.flac", (), "audio/x-flac", "it is FLAC audio (audio/x-flac), with no video stream"),
        # An MP4 holding only sound looks like any MP4 from its first bytes: its tracks say.
        ("sound_only.mp4", ("-f", "mp4"), "video/mp4", "it is MP4 with no video track, sound only"),
        ("sound_only.mov", ("-f", "mov"), "video/quicktime", "it is MOV with no video track, sound only"),
    ],
)
def test_audio_is_named_as_audio(tmp_path: Path, name: str, options: tuple[str, ...], detected_type: str,
                                 reason: str) -> None:
    assert guess_content(write_tone(tmp_path / name, *options)) == ContentGuess(detected_type, reason)


@pytest.mark.parametrize("options", [(), ("-movflags", "+faststart")], ids=["index-at-end", "index-at-front"])
def test_an_mp4_cut_before_its_whole_index_is_called_cut_short(tmp_path: Path, options: tuple[str, ...]) -> None:
    """The most common broken upload: FFmpeg says only "moov atom not found"."""
    video = write_test_pattern(tmp_path / "full.mp4", "-c:v", "mpeg4", *options, seconds=1.0)
    content = video.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(content[:200] if options else content[: len(content) // 2])  # 200: inside the index
    assert guess_content(truncated) == ContentGuess(
        "video/mp4",
        "it is MP4 with no index (moov box): cut short, as an upload or a recording that stopped before its end"
        " (the index is written last unless the file was made with +faststart)",
    )


def test_an_mp4_with_its_index_and_a_damaged_start_is_called_damaged(tmp_path: Path) -> None:
    video = write_test_pattern(tmp_path / "full.mp4", "-c:v", "mpeg4", seconds=1.0)
    content = bytearray(video.read_bytes())
    mdat = content.index(b"mdat")
    content[mdat + 4: mdat + 4 + 20_000] = bytes(20_000)  # every frame's bytes zeroed, the boxes whole
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(content))
    guess = guess_content(damaged)
    assert guess is not None and "incomplete or damaged" in guess.reason


def test_an_mp4_s_video_track_names_its_format(tmp_path: Path) -> None:
    """Where OpenCV cannot decode what the video track holds, the caller learns what that is."""
    video = write_test_pattern(tmp_path / "full.mp4", "-c:v", "mpeg4", seconds=1.0)
    content = bytearray(video.read_bytes())
    unknown = tmp_path / "unknown.mp4"
    unknown.write_bytes(bytes(content).replace(b"mp4v", b"zz\x01z", 1))  # the sample entry's format
    guess = guess_content(unknown)
    assert guess == ContentGuess("video/mp4", "it is MP4 whose video track is in 'zz?z', a format this server's "
                                              "OpenCV cannot decode, or incomplete or damaged")


def test_an_mp4_of_subtitles_alone_has_no_video_track(tmp_path: Path) -> None:
    subtitles = tmp_path / "captions.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    captions = tmp_path / "captions.mp4"
    subprocess.run([ffmpeg_executable(), "-hide_banner", "-loglevel", "error", "-i", str(subtitles), "-c:s",
                    "mov_text", str(captions)], check=True, capture_output=True, timeout=60)
    assert guess_content(captions) == ContentGuess("video/mp4", "it is MP4 with no video track")


def test_documents_and_archives_are_named(tmp_path: Path) -> None:
    pdf = tmp_path / "report.mp4"
    pdf.write_bytes(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n")
    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("clip.mp4", b"\x00" * 100)
    assert guess_content(pdf) == ContentGuess("application/pdf", "it is PDF data (application/pdf)")
    assert guess_content(archive) == ContentGuess("application/zip", "it is ZIP data (application/zip)")


def test_text_is_quoted_from_its_start(tmp_path: Path) -> None:
    pointer = tmp_path / "clip.mp4"  # what a clone without Git LFS holds instead of the video
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 84977953\n")
    page = tmp_path / "download.mp4"
    page.write_text("<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head></html>\n")
    logged = "it is text (its start is told to the caller)"  # the server's log quotes no upload
    assert guess_content(pointer) == ContentGuess(
        "text/plain", "it is text, starting 'version https://git-lfs.github.com/spec/'", logged)
    assert guess_content(page) == ContentGuess(
        "text/plain", "it is text, starting '<!DOCTYPE html> <html><head><title>403 F'", logged)


def test_text_cut_inside_a_character_at_the_sample_end_is_still_text(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_bytes(("a" * 511 + "é" * 300).encode())  # the 512th byte is half of an "é"
    guess = guess_content(path)
    assert guess is not None and guess.detected_type == "text/plain"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        bytes(range(256)) * 8,  # binary: control bytes
        b"\x00" * 4096,
        b"abc\x1b[31mred",  # a terminal escape is not printable text
        b"\xff\xfe" + "not utf-8".encode("utf-16-le"),
    ],
)
def test_bytes_that_say_nothing_get_no_guess(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    assert guess_content(path) is None


def test_a_missing_file_gets_no_guess(tmp_path: Path) -> None:
    assert guess_content(tmp_path / "missing.mp4") is None


def _box(kind: bytes, *children: bytes, payload: bytes = b"") -> bytes:
    body = payload + b"".join(children)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _iso_file(*tracks: bytes) -> bytes:
    return _box(b"ftyp", payload=b"isom\x00\x00\x02\x00isomiso2mp41") + _box(b"moov", _box(b"mvhd"), *tracks)


def _trak(handler: bytes, sample_format: bytes = b"", padding: int = 0) -> bytes:
    hdlr = _box(b"hdlr", payload=b"\x00" * 8 + handler + b"\x00" * 12)
    stsd = _box(b"stsd", payload=b"\x00" * 8 + (_box(sample_format) if sample_format else b""))
    minf = _box(b"minf", _box(b"stbl", stsd))
    return _box(b"trak", _box(b"mdia", *(_box(b"free") for _ in range(padding)), hdlr, minf))


@pytest.mark.parametrize(
    ("tracks", "reason"),
    [
        ((_trak(b"soun", b"mp4a"), _trak(b"vide", b"zzzz")),  # the video track's format, wherever it is
         "it is MP4 whose video track is in 'zzzz', a format this server's OpenCV cannot decode, or incomplete or "
         "damaged"),
        ((_trak(b"vide", b"png "),),
         "it is MP4 whose video track is in 'png ', a format this server's OpenCV cannot decode, or incomplete or "
         "damaged"),
        ((_trak(b"vide"),), "it is MP4 whose video track is damaged: it names no format"),
        ((_trak(b"tmcd", b"tmcd"),), "it is MP4 with no video track"),
        # An index with no track at all, or a track with no handler, says nothing sure: no "cut short".
        ((), "it is MP4, a video container, but audio only, in a codec OpenCV lacks, incomplete or damaged"),
        ((_box(b"trak", _box(b"tkhd")), _trak(b"soun", b"mp4a")),
         "it is MP4, a video container, but audio only, in a codec OpenCV lacks, incomplete or damaged"),
    ],
    ids=["sound-then-video", "format-with-a-space", "no-format", "timecode-only", "no-track", "track-without-media"],
)
def test_an_mp4_s_tracks_as_its_boxes_describe_them(tmp_path: Path, tracks: tuple[bytes, ...], reason: str) -> None:
    video = tmp_path / "crafted.mp4"
    video.write_bytes(_iso_file(*tracks))
    assert guess_content(video) == ContentGuess("video/mp4", reason)


def test_an_index_of_more_boxes_than_a_real_one_holds_is_not_read_through(tmp_path: Path) -> None:
    """Thousands of tracks of thousands of boxes kept the server reading headers for 17 s (a
    134 MB upload): every walk through one index now shares one budget of headers."""
    padded = [_trak(b"soun", b"mp4a", padding=150) for _ in range(150)]  # 22,500 boxes and more
    video = tmp_path / "crafted.mp4"
    video.write_bytes(_iso_file(*padded, _trak(b"vide", b"avc1")))
    assert guess_content(video) == ContentGuess(
        "video/mp4", "it is MP4, a video container, but audio only, in a codec OpenCV lacks, incomplete or damaged")
    with video.open("rb") as file:
        assert first_video_track(file) is None
    video.write_bytes(_iso_file(*padded[:100], _trak(b"vide", b"avc1")))  # 15,000 and more: a budget, no cap
    with video.open("rb") as file:
        assert first_video_track(file) is not None


def test_the_edit_list_reader_keeps_to_the_same_budget(tmp_path: Path) -> None:
    """Read at the end of every MP4 run: thousands of boxes in a track before the video kept it
    reading headers for seconds, as long as FFmpeg's own parsing again."""
    elst = _box(b"elst", payload=struct.pack(">B3xI", 0, 1) + struct.pack(">IiI", 2000, 0, 1 << 16))  # 2 s shown
    handler = _box(b"hdlr", payload=b"\x00" * 8 + b"vide" + b"\x00" * 12)
    video = _box(b"trak", _box(b"edts", elst), _box(b"mdia", handler))
    mvhd = _box(b"mvhd", payload=b"\x00" * 12 + struct.pack(">I", 1000) + b"\x00" * 4)
    padded = [_trak(b"soun", b"mp4a", padding=150) for _ in range(150)]
    for tracks, shown in (([], 2.0), (padded[:100], 2.0), (padded, None)):
        path = tmp_path / "crafted.mp4"
        path.write_bytes(_box(b"ftyp", payload=b"isom\x00\x00\x02\x00isom") + _box(b"moov", mvhd, *tracks, video))
        assert shown_seconds(path) == shown


def _mjpg_avi(tmp_path: Path) -> bytes:
    path = tmp_path / "clip.avi"
    write_test_pattern(path, "-c:v", "mjpeg", "-frames:v", "3", size="64x48")
    return path.read_bytes()


def test_an_avi_whose_video_declares_frames_ffmpeg_refuses_is_named_by_their_size(tmp_path: Path) -> None:
    claims = tmp_path / "claims.avi"
    claims.write_bytes(claim_avi_frame_size(_mjpg_avi(tmp_path), 60000, 60000))
    guess = guess_content(claims)
    assert guess is not None
    assert guess.reason.startswith("it is AVI whose video declares frames of 60000 x 60000 px, more than FFmpeg")


def test_an_avi_main_header_alone_claiming_a_huge_size_is_not_blamed(tmp_path: Path) -> None:
    """FFmpeg sizes frames by the stream's format; a main header's size alone it ignores, so an
    AVI that fails for another reason (here a codec no one has) is not said to be too large."""
    data = bytearray(_mjpg_avi(tmp_path))
    chunks = {chunk.chunk_id: chunk for chunk in reversed(riff_chunks(bytes(data)))}
    struct.pack_into("<II", data, chunks["avih"].data_offset + 32, 60000, 60000)  # dwWidth, dwHeight
    data[chunks["strh"].data_offset + 4:chunks["strh"].data_offset + 8] = b"ZZZZ"  # the stream's codec
    data[chunks["strf"].data_offset + 16:chunks["strf"].data_offset + 20] = b"ZZZZ"  # biCompression
    claims = tmp_path / "main_header_only.avi"
    claims.write_bytes(bytes(data))
    guess = guess_content(claims)
    assert guess is not None and "60000" not in guess.reason


def test_the_moov_is_looked_for_once_a_file_by_every_reader_of_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """99,000 small boxes before the `moov` (an 800 KB upload) cost half a second a walk, and
    the probe's readers walked them once each: seconds a run."""
    video = tmp_path / "boxes_first.mp4"
    video.write_bytes(_box(b"ftyp", payload=b"isom\x00\x00\x02\x00isom") + _box(b"free") * 20_000
                      + _box(b"moov", _box(b"mvhd"), _trak(b"vide", b"avc1")))
    top_level_walks: list[int] = []
    walk = mp4_boxes.boxes

    def counted(stream: Any, start: int, end: int | None, most: int) -> Any:
        if most == mp4_boxes.MAX_TOP_LEVEL_BOXES:
            top_level_walks.append(start)
        return walk(stream, start, end, most)

    monkeypatch.setattr(mp4_boxes, "boxes", counted)
    for _ in range(3):
        with video.open("rb") as file:
            assert first_video_track(file) is not None
        assert shown_seconds(video) is None
        assert guess_content(video) is not None
    assert top_level_walks == [0]


def test_a_moov_remembered_is_looked_for_again_once_the_file_changed_in_place(tmp_path: Path) -> None:
    """Same inode, size and modification time (a change within one tick of the file system's
    clock): the place remembered is checked, not trusted."""
    video = tmp_path / "changed.mp4"
    track = _trak(b"vide", b"avc1")
    before = _box(b"free") + _box(b"moov", _box(b"mvhd"), track)
    after = _box(b"moov", _box(b"mvhd"), track) + _box(b"free")
    video.write_bytes(before)
    with video.open("rb") as file:
        assert mp4_boxes.find_moov(file) == (16, len(before))
    times = video.stat().st_mtime_ns
    with video.open("r+b") as file:
        file.write(after)
    os.utime(video, ns=(times, times))
    with video.open("rb") as file:
        assert mp4_boxes.find_moov(file) == (8, len(after) - 8)
