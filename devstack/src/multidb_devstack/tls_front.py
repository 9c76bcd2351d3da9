"""The TLS front of an embedded PostgreSQL whose binaries have no TLS of their own.

The ``pgserver`` wheel's PostgreSQL is built without OpenSSL (``ssl = on`` stops it with
"SSL is not supported by this build"). So the embedded server listens on its Unix socket
only, and this process holds the cluster's TCP port: it answers PostgreSQL's
``SSLRequest`` with ``S``, completes the TLS handshake with the cluster's server
certificate, and relays the session, byte for byte, to the server's socket. A client sees
a PostgreSQL server that speaks TLS (``sslmode=verify-full`` verifies its certificate and
host name), and, like a ``pg_hba.conf`` of ``hostssl`` lines only, one that refuses a
session without TLS. Cancel requests pass as they come.

    python -m multidb_devstack.tls_front --port P --socket S --certificate C --key K

It prints ``ready`` once it listens, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import ssl
import struct
import sys
from collections.abc import Sequence

log = logging.getLogger("multidb_devstack.tls_front")

# PostgreSQL's special startup codes (src/include/libpq/pqcomm.h).
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
MAX_STARTUP_PACKET = 10_000  # PostgreSQL's own limit
# A client that connects and says nothing is dropped after this long, as PostgreSQL does
# after authentication_timeout.
STARTUP_TIMEOUT_S = 60.0
CHUNK = 256 * 1024
HOST = "127.0.0.1"


def server_context(certificate: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, key)
    if ssl.HAS_ALPN:
        context.set_alpn_protocols(["postgresql"])
    return context


def error_response(message: str) -> bytes:
    """A FATAL ``ErrorResponse`` (SQLSTATE 28000, as ``pg_hba.conf`` refusals are)."""
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "28000"), (b"M", message))
    )
    body = fields + b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


def startup_parameters(body: bytes) -> dict[str, str]:
    """The ``user``, ``database``, ... of a StartupMessage body (after the protocol word)."""
    parts = body[4:].split(b"\0")
    pairs = zip(parts[0::2], parts[1::2], strict=False)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


class Front:
    """Accepts TLS sessions on ``port`` and relays each to the server's Unix ``socket``."""

    def __init__(self, socket_path: str, context: ssl.SSLContext) -> None:
        self.socket_path = socket_path
        self.context = context

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                first = await self._negotiate(reader, writer)
            if first is not None:
                await self._relay(first, reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
            # A client that refused our certificate ends here: its failure is its to report.
            log.debug("session ended: %s", type(exc).__name__)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _negotiate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """Answer the encryption requests; the packet to pass on, or None to hang up."""
        encrypted = False
        while True:
            header = await reader.readexactly(8)
            length, code = struct.unpack("!ii", header)
            if not 8 <= length <= MAX_STARTUP_PACKET:
                return None
            if code == SSL_REQUEST and length == 8 and not encrypted:
                writer.write(b"S")
                await writer.drain()
                # Bytes the client sent before the handshake would be relayed as if they had
                # come encrypted (PostgreSQL's CVE-2021-23214): hang up, as the server does.
                # A client waits for the "S" before it says more. No await between this check
                # and start_tls pausing the socket, so nothing can slip in between.
                if _buffered(reader):
                    return None
                await writer.start_tls(self.context)
                encrypted = True
                continue
            if code == GSSENC_REQUEST and length == 8 and not encrypted:
                writer.write(b"N")  # no GSSAPI encryption: the client goes on to TLS or not
                await writer.drain()
                continue
            body = await reader.readexactly(length - 8)
            if code == CANCEL_REQUEST or encrypted:
                return header + body
            # A session without TLS: refused, as by a pg_hba.conf of hostssl lines only.
            found = startup_parameters(body)
            writer.write(
                error_response(
                    f'TLS sessions only: host "{HOST}", user "{found.get("user", "")}", '
                    f'database "{found.get("database", "")}", no encryption'
                )
            )
            await writer.drain()
            return None

    async def _relay(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream_reader, upstream_writer = await asyncio.open_unix_connection(self.socket_path)
        upstream_writer.write(first)
        pipes = [
            asyncio.create_task(_pipe(reader, upstream_writer)),
            asyncio.create_task(_pipe(upstream_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            upstream_writer.close()
            await asyncio.gather(*pipes, return_exceptions=True)


def _buffered(reader: asyncio.StreamReader) -> int:
    """How many received bytes ``reader`` holds unread (asyncio keeps them in ``_buffer``)."""
    buffer: bytes | bytearray = getattr(reader, "_buffer", b"")
    return len(buffer)


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await source.read(CHUNK):
            target.write(data)
            await target.drain()


async def serve(port: int, front: Front) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await asyncio.start_server(front.handle, HOST, port)
    # Readiness for the parent, once; then stdout goes nowhere, so that a parent that
    # stopped reading never blocks or breaks us.
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m multidb_devstack.tls_front")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", required=True, help="the server's Unix socket")
    parser.add_argument("--certificate", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    front = Front(args.socket, server_context(args.certificate, args.key))
    try:
        import uvloop  # noqa: PLC0415 - faster when installed (it comes with uvicorn[standard])
    except ImportError:
        asyncio.run(serve(args.port, front))
    else:
        uvloop.run(serve(args.port, front))
    return 0


if __name__ == "__main__":
    sys.exit(main())
