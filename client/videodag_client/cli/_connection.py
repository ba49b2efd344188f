"""The options that say which server to talk to and how, and the client they build.

They are accepted before the subcommand (`videodag --server H:P run ...`) and after it
(`videodag run ... --server H:P`): subcommands get copies whose defaults are suppressed, so
a value given before the subcommand is not overwritten by a default after it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import ssl
import sys

import grpc

from videodag_client import DEFAULT_TARGET, VideodagClient
from videodag_client._target import stays_on_this_machine
from videodag_client.cli._arguments import MAX_TIMEOUT_SECONDS, UsageError, float_in_range, server_address

SERVER_ENV = "VIDEODAG_SERVER"
TOKEN_ENV = "VIDEODAG_TOKEN"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options with their real defaults (environment, then built-in); top level only."""
    _add(
        parser,
        server=None,  # --server, else $VIDEODAG_SERVER, else the default: resolved by `connect`
        token=os.environ.get(TOKEN_ENV),
        tls=False,
        tls_ca=None,
        tls_cert=None,
        tls_key=None,
        tls_server_name=None,
        timeout=None,
    )


def connection_options_parent() -> argparse.ArgumentParser:
    """A parent parser for subcommands: the same options, defaults left to the top level."""
    parent = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _add(parent)
    return parent


def _add(parser: argparse.ArgumentParser, **defaults: object) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        type=server_address,
        metavar="HOST:PORT",
        help=f"server address, port required (env {SERVER_ENV}; default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--token", help=f"bearer token sent as the authorization header (env {TOKEN_ENV})"
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS, trusting the system's roots")
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="connect with TLS, trusting the PEM certificates in FILE (implies --tls)",
    )
    group.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="mutual TLS: present the PEM client certificate (chain) in FILE; needs --tls-key, implies --tls",
    )
    group.add_argument("--tls-key", metavar="FILE", help="mutual TLS: the PEM private key of --tls-cert")
    group.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the server's certificate must hold, where it is not --server's host (a tunnel, a "
        "port-forward to 127.0.0.1); implies --tls",
    )
    group.add_argument(
        "--timeout",
        type=float_in_range(0, MAX_TIMEOUT_SECONDS, low_inclusive=False),
        metavar="SECONDS",
        help="deadline of each call, more than 0; default none (a watch, which lasts as long as its job, has none)",
    )
    if defaults:
        parser.set_defaults(**defaults)


def connect(args: argparse.Namespace) -> VideodagClient:
    """Builds the client the options describe; a TLS file that is unreadable or not PEM is a `UsageError`."""
    credentials = channel_credentials(args)
    target = args.server or _server_from_environment()
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    try:
        client = VideodagClient(target, credentials=credentials, token=args.token, timeout=args.timeout,
                                channel_options=options)
    except ValueError as error:  # a token that cannot be a header value
        raise UsageError(f"--token (or {TOKEN_ENV}): {error}") from None
    if args.token and credentials is None and not stays_on_this_machine(target):
        # Said, not refused: a private network or a service mesh's own encryption may make it
        # safe, which the command cannot know; the person or the log reading it can.
        print(f"warning: the token goes to {target} in clear text (no --tls): anyone on the network between can "
              "read it and use it; connect with --tls, or --tls-ca FILE", file=sys.stderr)
    return client


def _server_from_environment() -> str:
    """$VIDEODAG_SERVER, checked as --server is but named as what it is; unset or empty: the default."""
    value = os.environ.get(SERVER_ENV, "")
    if not value:
        return DEFAULT_TARGET
    try:
        return server_address(value)
    except argparse.ArgumentTypeError as problem:
        raise UsageError(f"{SERVER_ENV}={value!r}: {problem}") from None


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials when any TLS option is given, else None (plaintext).

    The files are checked here because gRPC takes any bytes and only fails later, at the
    handshake, with a status that reads like a network fault.
    """
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together: give both (mutual TLS) or neither")
    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_server_name):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(args.tls_ca, "--tls-ca", "CERTIFICATE") if args.tls_ca else _system_roots(),
        private_key=_read_pem(args.tls_key, "--tls-key", "PRIVATE KEY") if args.tls_key else None,
        certificate_chain=_read_pem(args.tls_cert, "--tls-cert", "CERTIFICATE") if args.tls_cert else None,
    )


def _system_roots() -> bytes | None:
    """The system's trusted certificates (what `update-ca-certificates` keeps; on Windows, its
    certificate store), as --tls promises: gRPC otherwise trusts a bundle of its own, without a
    company's CA installed on the machine. The bundle file OpenSSL names (`SSL_CERT_FILE`), and
    the certificates in its folder (`SSL_CERT_DIR`) where that is set or there is no bundle.
    None where gRPC is told where its roots are (GRPC_DEFAULT_SSL_ROOTS_FILE_PATH) or the system
    has no certificates Python's ssl knows of."""
    if os.environ.get("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"):
        return None
    paths = ssl.get_default_verify_paths()
    bundle = next((content for candidate in (paths.cafile, paths.openssl_cafile)
                   if candidate and (content := _readable(candidate)) is not None), None)
    # The variable itself: Python's `capath` is None for a list of folders, which is not a folder.
    folder = os.environ.get(paths.openssl_capath_env) or (paths.capath if bundle is None else None)
    found = (bundle or b"") + (_certificates_in(folder) if folder else b"")
    if bundle is None:  # Windows keeps its roots in a store, which Python's default context reads
        certificates = ssl.create_default_context().get_ca_certs(binary_form=True)
        found += "".join(ssl.DER_cert_to_PEM_cert(der) for der in certificates).encode("ascii")
    return found or None


_MAX_FOLDER_FILES = 100_000
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _readable(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


def _certificates_in(folders: str) -> bytes:
    """The certificates in the files of OpenSSL certificate folders (`a:b`, as SSL_CERT_DIR
    lists them; hashed links and the files they lead to alike, a certificate twice is harmless),
    each checked and written out again: gRPC stops reading at the first block that does not
    parse, which would drop every certificate after a cut-off or empty one. Only regular files:
    a FIFO would be read forever."""
    found: list[bytes] = []
    for folder in filter(None, folders.split(os.pathsep)):
        try:
            names = sorted(os.listdir(folder))[:_MAX_FOLDER_FILES]
        except OSError:
            continue
        for name in names:
            path = os.path.join(folder, name)
            content = _readable(path) if os.path.isfile(path) else None
            for block in _PEM_CERTIFICATE.findall(content or b""):
                try:
                    der = base64.b64decode(b"".join(block.split()), validate=True)
                except (ValueError, binascii.Error):
                    continue
                if _is_whole_der_sequence(der):
                    found.append(ssl.DER_cert_to_PEM_cert(der).encode("ascii"))
    return b"".join(found)


def _is_whole_der_sequence(der: bytes) -> bool:
    """Whether `der` is one whole DER SEQUENCE, as a certificate is: not empty, not cut short."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    if der[1] < 0x80:
        return 2 + der[1] == len(der)
    count = der[1] & 0x7F
    return 0 < count <= 4 and 2 + count + int.from_bytes(der[2:2 + count], "big") == len(der)


def _read_pem(path: str, option: str, label: str) -> bytes:
    """The file's bytes, if it can be read and holds a PEM block of this kind (`BEGIN ... {label}`)."""
    try:
        with open(path, "rb") as pem_file:
            content = pem_file.read()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot read it: {error.strerror or error}") from None
    if not any(line.startswith(b"-----BEGIN ") and line.rstrip().endswith(f"{label}-----".encode())
               for line in content.splitlines()):
        raise UsageError(f"{option} {path}: not a PEM file with a {label.lower()} (no '-----BEGIN ... {label}-----')")
    return content
