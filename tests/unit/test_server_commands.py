"""The server's commands refuse to start with a clear line, not a traceback, when a third-party
module the server needs cannot be imported (a client-only install; the end to end test is
tests/e2e/test_client_only_install.py); a missing module of videodag's own is a bug, raised."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from videodag_service import commands


def test_a_server_whose_opencv_cannot_be_imported_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def importing(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "videodag_service.server":  # as its import of cv2 fails where OpenCV is not installed
            raise ModuleNotFoundError("No module named 'cv2'", name="cv2")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", importing)
    with pytest.raises(SystemExit) as exited:
        commands.server()
    assert exited.value.code == 1
    message = capsys.readouterr().err
    assert message.startswith("videodag-server: the server cannot import cv2, one of its dependencies")
    assert "pip install 'videodag[server]'" in message and "pip install '.[server]'" in message


def test_a_missing_module_of_videodag_itself_is_raised_as_the_bug_it_is() -> None:
    with pytest.raises(ModuleNotFoundError, match=r"videodag_service\.gone"):
        commands.refuse_without_server_dependency(
            "videodag-server", ModuleNotFoundError("No module named 'videodag_service.gone'",
                                                   name="videodag_service.gone"))


def test_a_full_install_misses_no_distribution_of_the_server_extra() -> None:
    assert commands.missing_server_distributions() == []
