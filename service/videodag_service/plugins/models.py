"""Where the detectors' model files live, and the error raised when one is not there.

Model weights are never fetched while the server runs: `python -m videodag_service.fetch_models`
puts them in the model directory once (it is the only step that needs the network), and
the plugins only read from there. The directory is `$VIDEODAG_MODEL_DIR`, or
`~/.cache/videodag/models` when the variable is unset or empty.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_DIR_ENV = "VIDEODAG_MODEL_DIR"
DEFAULT_MODEL_DIR = Path("~/.cache/videodag/models")
FETCH_COMMAND = "python -m videodag_service.fetch_models"


def model_dir() -> Path:
    """The directory holding downloaded model files (it may not exist yet)."""
    configured = os.environ.get(MODEL_DIR_ENV, "").strip()
    return Path(configured or DEFAULT_MODEL_DIR).expanduser()


class ModelFileMissing(FileNotFoundError):
    """Raised when a model file a plugin needs is not on disk.

    `hint` says how to get it; for the bundled detectors it is to run the fetch script.
    """

    def __init__(self, path: Path, hint: str) -> None:
        super().__init__(f"model file {str(path)!r} not found: {hint}")
        self.filename = str(path)
        self.hint = hint

    def __str__(self) -> str:
        return str(self.args[0])


def fetched_model_file(name: str) -> Path:
    """The path of a file `python -m videodag_service.fetch_models` installs; raises ModelFileMissing if absent."""
    try:
        path = model_dir() / name
    except RuntimeError:  # "Could not determine home directory": no HOME, and no passwd entry (OpenShift's uids)
        raise ModelFileMissing(
            DEFAULT_MODEL_DIR / name,
            f"this user has no home directory to find {DEFAULT_MODEL_DIR} in: set {MODEL_DIR_ENV} to the folder "
            f"that holds the models (`{FETCH_COMMAND}` puts them there)",
        ) from None
    if not path.is_file():
        raise ModelFileMissing(
            path,
            f"run `{FETCH_COMMAND}` once to download and prepare the models "
            f"(set {MODEL_DIR_ENV} to use another directory)",
        )
    return path
