"""`videodag-server`'s command line: a flag for every setting, read with the environment into Settings.

Apart from `settings`, which says what a valid server is, because this says where the
values come from: a flag wins over its environment variable, which wins over the default,
and a bad value is named as the user gave it (the flag, or the variable).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

from videodag_service.plugins.models import DEFAULT_MODEL_DIR, FETCH_COMMAND, MODEL_DIR_ENV
from videodag_service.service_links import kubernetes_service_links
from videodag_service.settings import (
    PROTECTING_SETTINGS,
    Settings,
    SettingsError,
    environment_variable,
    flag,
    value_type,
)
from videodag_service.written_numbers import MOST_EXPONENT_DIGITS, TooManyDigits, whole_number


def _convert(name: str, raw: str) -> Any:
    """A flag's or variable's text as the setting's value; a Literal's word stays text, checked by Settings."""
    kind = value_type(name)
    if kind not in (Path, float, int):
        return raw
    try:
        return whole_number(raw) if kind is int else kind(raw)
    except TooManyDigits:
        raise SettingsError.of_setting(
            name, f"must be a whole number, of at most {MOST_EXPONENT_DIGITS} digits when written with an exponent, "
            f"got {raw!r}") from None
    except ValueError:
        wanted = "a whole number" if kind is int else "a number" if kind is float else "a path"
        raise SettingsError.of_setting(name, f"must be {wanted}, got {raw!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The `videodag-server` argument parser; every setting has a flag and an environment variable."""
    parser = argparse.ArgumentParser(
        prog="videodag-server",
        description="Serve videodag: run named DAG pipelines of vision plugins over uploaded videos (gRPC).",
        epilog=(
            "Every flag can also be set by its environment variable; a flag wins over the environment. "
            f"The detectors' model files are read from ${MODEL_DIR_ENV} (default {DEFAULT_MODEL_DIR}), "
            f"where `{FETCH_COMMAND}` puts them."
        ),
    )
    for item in fields(Settings):
        default = item.default if item.default is not MISSING else None
        parser.add_argument(
            flag(item.name),
            dest=item.name,
            default=None,
            metavar=item.name.upper(),
            help=f"{item.metadata['help']} [env {environment_variable(item.name)}; default {default}]",
        )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('videodag')}")
    parser.add_argument(
        "--list-plugins",
        action="store_true",
        help="print every plugin tool a pipeline file can name (inputs, outputs, parameters) and exit",
    )
    return parser


def wants_plugin_list(argv: Sequence[str] | None = None) -> bool:
    """Whether the command line asks for the plugin reference instead of a server."""
    return bool(build_parser().parse_args(argv).list_plugins)


def settings_from(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then environment variables, then defaults; raises SettingsError."""
    return settings_and_sources(argv, environ)[0]


def settings_and_sources(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, dict[str, str]]:
    """`settings_from`'s settings, and how each setting given was given: its flag, or its
    environment variable (for `written_setting`); the defaults are not in it."""
    environ = os.environ if environ is None else environ
    parsed = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    # How each value was given, the name a bad one is reported by: a server configured by a
    # dozen variables is told which variable, not a name it never wrote.
    given_as: dict[str, str] = {}
    try:
        for item in fields(Settings):
            its_flag, variable = flag(item.name), environment_variable(item.name)
            raw, source = parsed.get(item.name), its_flag
            if raw is None and variable not in kubernetes_service_links(environ):
                raw, source = environ.get(variable), variable
            if raw == "" and parsed.get(item.name) is not None:
                # `--pipeline-dir "$PIPELINES"` with the variable unset served the built-in pipelines, and
                # `--token-file "$TOKEN_FILE"` no authentication at all. An empty variable stays unset.
                default = "turn it off" if item.name in PROTECTING_SETTINGS else "keep its default"
                raise SettingsError(f"{item.name} was given empty ({its_flag} \"\"): give a value, or leave the flag "
                                    f"out to {default}")
            if raw is not None and raw != "":
                given_as[item.name] = source
                values[item.name] = _convert(item.name, raw)
        return Settings(**values), given_as
    except SettingsError as error:
        if error.setting is not None and error.problem is not None and error.setting in given_as:
            raise SettingsError(f"{given_as[error.setting]} {error.problem}") from None
        raise
