"""Bearer-token authentication and TLS credentials for the server.

Tokens are compared in constant time (`hmac.compare_digest`) against every accepted
token, so the time a check takes says nothing about how close a guess was. Health
checks stay open, so load balancers and orchestrators can probe without a token.
Tokens or TLS files the server cannot use stop its start with a SettingsError.
"""

from __future__ import annotations

import hmac
import logging
import re
import ssl
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from videodag_service.call_status import abort
from videodag_service.errors import Unauthenticated
from videodag_service.settings import SettingsError

logger = logging.getLogger(__name__)

OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
_BEARER = "bearer "


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no annotations
    """Refuses calls without `authorization: Bearer <token>` naming an accepted token (UNAUTHENTICATED)."""

    def __init__(self, tokens: Iterable[str], open_method_prefixes: tuple[str, ...] = OPEN_METHOD_PREFIXES) -> None:
        self._tokens = tuple(token.encode() for token in tokens if token)
        if not self._tokens:
            raise SettingsError("at least one token is needed to require authentication")
        self._open = open_method_prefixes

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._open):
            return handler
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return handler
        return _refusing_handler(handler, handler_call_details.method, problem)

    def _problem(self, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        header = next((value for key, value in metadata if key == "authorization"), None)
        if header is None:
            return "missing bearer token: send the metadata 'authorization: Bearer <token>'"
        text = header.decode() if isinstance(header, bytes) else header
        if not text.lower().startswith(_BEARER):
            return "the authorization metadata must be 'Bearer <token>'"
        offered = text[len(_BEARER):].strip().encode()
        # Compare against every token, without stopping early, so timing reveals nothing.
        matched = False
        for token in self._tokens:
            matched |= hmac.compare_digest(offered, token)
        return None if matched else "invalid bearer token"


def _refusing_handler(handler: grpc.RpcMethodHandler, method: str, problem: str) -> grpc.RpcMethodHandler:
    """A handler that logs the refusal and ends the call with UNAUTHENTICATED, at once.

    It takes the request as a stream whatever the method's shape, so gRPC calls it without
    waiting for a request message: a caller without a token that opens calls and never sends
    their message would otherwise hold one of the server's call slots each, for as long as it
    liked, until health checks and every authenticated caller were refused. The refusal is
    logged here, in the call's handler thread, not in `intercept_service`: that runs on gRPC's
    polling thread, outside the request id the request-context interceptor (installed outside
    this one) binds around the handler, so the line would have none.
    """

    def refuse(_requests: Any, context: grpc.ServicerContext) -> Any:
        logger.info("refused %s: %s", method, problem)
        abort(context, Unauthenticated(problem))  # with ErrorInfo, like every refusal of the server's

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)


# What a header value can carry, as clients check their token (printable ASCII and spaces).
_TOKEN = re.compile(r"[\x20-\x7e]+")


def read_tokens(token_file: Path | None, tokens_env: str | None) -> list[str]:
    """Accepted tokens: one per line in `token_file` (# comments allowed) plus comma-separated `tokens_env`.

    A byte-order mark (Notepad's UTF-8) is no part of the first token; a token no header can
    carry (`π-token`) is refused, naming where it is, not what: no client could send it."""
    tokens: list[tuple[str, str]] = []
    if token_file is not None:
        try:
            lines = token_file.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as error:
            raise SettingsError(str(error)) from error
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                tokens.append((line, f"line {number} of {token_file}"))
    if tokens_env:
        parts = [part.strip() for part in tokens_env.split(",")]
        tokens.extend((part, f"position {position} of the tokens setting")
                      for position, part in enumerate(parts, start=1) if part)
    for token, where in tokens:
        if not _TOKEN.fullmatch(token):
            raise SettingsError(f"the token at {where} is not printable ASCII, which is all a request header carries")
    if not tokens:
        source = f"{token_file} holds none (blank lines and lines starting with # are skipped)" if token_file \
            else "the tokens setting holds none"
        raise SettingsError(f"at least one token is needed to require authentication: {source}")
    return [token for token, _ in tokens]


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def _holds_a_certificate(pem: bytes) -> bool:
    """Whether one PEM certificate block of `pem` reads as a certificate: gRPC serves with the
    ones it can read, and fails to bind when there is none."""
    for block in _PEM_CERTIFICATE.findall(pem):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cadata=block.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError):
            continue
        return True
    return False


def _read_pem(path: Path, what: str, label: bytes) -> bytes:
    """The file's bytes, once it can be read and holds a PEM block of its kind (`BEGIN ... label`):
    Python's ssl says "[Errno 13] Permission denied" or "PEM lib" without naming the file."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise SettingsError(f"{what} {path}: cannot read it: {error.strerror or error}") from None
    if not any(line.startswith(b"-----BEGIN ") and line.rstrip().endswith(label + b"-----")
               for line in content.splitlines()):
        kind = label.decode().lower()
        raise SettingsError(f"{what} {path} holds no usable PEM {kind} (no '-----BEGIN ... {label.decode()}-----' "
                            "line)")
    return content


class _EncryptedKey(Exception):
    """The key asks for a passphrase, which a server started unattended cannot type."""


def _no_passphrase() -> str:
    raise _EncryptedKey


def server_credentials(cert_file: Path, key_file: Path, client_ca_file: Path | None) -> grpc.ServerCredentials:
    """TLS credentials; with `client_ca_file`, clients must present a certificate it signed (mutual TLS).

    The pair is checked here with Python's ssl first: gRPC only fails later, to bind the port,
    and says nothing of the certificate (a key of another certificate, a file not PEM).
    """
    cert = _read_pem(cert_file, "TLS certificate", b"CERTIFICATE")
    key = _read_pem(key_file, "TLS key", b"PRIVATE KEY")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise SettingsError(f"TLS key {key_file} is encrypted; give the server an unencrypted key") from None
    except ssl.SSLError as error:
        raise SettingsError(f"TLS certificate {cert_file} and key {key_file} cannot be used together: "
                         f"{error.reason or error}") from None
    client_ca = _read_pem(client_ca_file, "TLS client CA file", b"CERTIFICATE") if client_ca_file else None
    if client_ca is not None and not _holds_a_certificate(client_ca):
        # gRPC would only fail to bind, as if the port were in use (a key, a CRL, a cut certificate)
        raise SettingsError(f"TLS client CA file {client_ca_file} holds no usable PEM certificate")
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
