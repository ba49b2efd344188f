"""What the server says at start about its environment: variables it does not read, and
protecting ones set empty.

Apart from the settings, which such variables do not change: a misspelt or renamed setting,
or the CLI's token in the server's environment, is ignored, and a protecting variable set
empty means unset. Each is worth a warning, never a refusal to start.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import fields

from videodag_service.plugins.models import MODEL_DIR_ENV
from videodag_service.service_links import is_service_link
from videodag_service.settings import ENV_PREFIX, PROTECTING_SETTINGS, Settings, environment_variable

# The videodag CLI's variables: a shell that runs both has them, and the server reads neither.
_CLI_SERVER_VARIABLE, _CLI_TOKEN_VARIABLE = ENV_PREFIX + "SERVER", ENV_PREFIX + "TOKEN"


def unknown_variables(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """What to say of each VIDEODAG_ variable the server does not read: a misspelt or renamed
    setting is otherwise ignored without a word, and the CLI's VIDEODAG_TOKEN in the server's
    environment leaves it answering every call with no token."""
    environ = os.environ if environ is None else environ
    read = {environment_variable(item.name) for item in fields(Settings)} | {MODEL_DIR_ENV, _CLI_SERVER_VARIABLE}
    said = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in read or is_service_link(variable, environ[variable]):
            continue
        if variable == _CLI_TOKEN_VARIABLE:
            if not settings.requires_token:
                said.append(f"{variable} is the videodag CLI's token to send, not read by the server: it requires no "
                            f"token; give it {ENV_PREFIX}TOKENS or {ENV_PREFIX}TOKEN_FILE")
            continue
        names = sorted(name.removeprefix(ENV_PREFIX) for name in read - {_CLI_SERVER_VARIABLE})
        close = " or ".join(ENV_PREFIX + name for name in _resembling(variable.removeprefix(ENV_PREFIX), names))
        said.append(f"{variable} is not a setting of the server: ignored" + (f" (did you mean {close}?)"
                                                                            if close else ""))
    return said


def _resembling(name: str, names: list[str]) -> list[str]:
    """The settings holding every word of `name` (plurals as singulars: MAX_UPLOADS, TLS_CA_FILE),
    else the one spelt most alike (a typo)."""
    def words(text: str) -> set[str]:
        return {word.removesuffix("S") for word in text.split("_") if word}

    wanted = words(name)
    holding = [candidate for candidate in names if wanted <= words(candidate)]
    return holding[:3] if holding else difflib.get_close_matches(name, names, n=1)


def unprotected_by_empty_variables(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """The protecting variables set empty while the server serves without what they turn on."""
    environ = os.environ if environ is None else environ
    unprotected = {"token_file": not settings.requires_token, "tokens": not settings.requires_token,
                   "tls_cert_file": settings.tls_cert_file is None, "tls_key_file": settings.tls_cert_file is None,
                   "tls_client_ca_file": settings.tls_client_ca_file is None}
    return [environment_variable(name) for name in PROTECTING_SETTINGS
            if environ.get(environment_variable(name)) == "" and unprotected[name]]
