"""The options that say which server to talk to and how, and the client they build.

They are accepted before the subcommand (`videodag --server H:P run ...`) and after it
(`videodag run ... --server H:P`): subcommands get copies whose defaults are suppressed, so
a value given before the subcommand is not overwritten by a default after it.
"""

from __future__ import annotations

import argparse
import os

import grpc

from videodag_client import DEFAULT_TARGET, VideodagClient

SERVER_ENV = "VIDEODAG_SERVER"
TOKEN_ENV = "VIDEODAG_TOKEN"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options with their real defaults (environment, then built-in); top level only."""
    _add(
        parser,
        server=os.environ.get(SERVER_ENV, DEFAULT_TARGET),
        token=os.environ.get(TOKEN_ENV),
        tls=False,
        tls_ca=None,
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
        metavar="HOST:PORT",
        help=f"server address (env {SERVER_ENV}; default {DEFAULT_TARGET})",
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
    group.add_argument("--timeout", type=float, metavar="SECONDS", help="deadline of each call; default none")
    if defaults:
        parser.set_defaults(**defaults)


def connect(args: argparse.Namespace) -> VideodagClient:
    """Builds the client the options describe; reading --tls-ca may raise OSError."""
    credentials = None
    if args.tls or args.tls_ca:
        root_certificates = None
        if args.tls_ca:
            with open(args.tls_ca, "rb") as ca_file:
                root_certificates = ca_file.read()
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return VideodagClient(args.server, credentials=credentials, token=args.token, timeout=args.timeout)
