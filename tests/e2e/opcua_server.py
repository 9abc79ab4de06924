"""A small asyncua server for tests that need what the PLC simulator does not serve (numeric NodeIds, a server
that refuses client certificates), run in its own thread and event loop on a free port."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.server.uaprocessor import UaProcessor
from asyncua.ua.ua_binary import struct_from_binary

from simulators import pki
from simulators.broker import free_port

SERVER_URI = "urn:shopfloor:test-server"


class ServerThread:
    """`setup(server)` runs after init and before start: add nodes, choose security there."""

    def __init__(self, setup: Callable[[Server], Awaitable[None]]) -> None:
        self.setup = setup
        self.endpoint = f"opc.tcp://127.0.0.1:{free_port()}/test"
        self.server: Server | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-opcua-server", daemon=True)

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"test OPC UA server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def call(self, coro: Awaitable[Any]) -> Any:
        """Run a coroutine on the server's loop (e.g. a write) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)  # type: ignore[arg-type]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
        finally:  # sessions of clients still connected have tasks of their own
            left = asyncio.all_tasks(self._loop)
            for task in left:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        await server.set_application_uri(SERVER_URI)
        await self.setup(server)
        self.server = server
        async with server:
            self._ready.set()
            await self._stop.wait()


async def serve_secured(server: Server, cert_dir: Path) -> Path:
    """Basic256Sha256 Sign and SignAndEncrypt only; the server certificate's path (DER) for the agent to trust."""
    pair = pki.ensure_self_signed(cert_dir, SERVER_URI, "Shopfloor test server")
    await server.load_certificate(str(pair.certificate))
    await server.load_private_key(str(pair.private_key))
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                                ua.SecurityPolicyType.Basic256Sha256_Sign])
    return pair.certificate


def refusing_open_secure_channel(status: int, attempts: list[bytes]) -> Callable[..., None]:
    """A replacement for `UaProcessor.open_secure_channel` (install it with monkeypatch) that answers every
    secured OpenSecureChannel with `status`, as servers do that check the client certificate when the channel
    opens (asyncua itself checks only at CreateSession); each refused certificate is appended to `attempts`."""
    original = UaProcessor.open_secure_channel

    def open_secure_channel(self: UaProcessor, algohdr: Any, seqhdr: Any, body: Any) -> None:
        if not algohdr.SenderCertificate:
            original(self, algohdr, seqhdr, body)  # GetEndpoints without security still works
            return
        attempts.append(algohdr.SenderCertificate)
        request = struct_from_binary(ua.OpenSecureChannelRequest, body)
        self._connection.select_policy(algohdr.SecurityPolicyURI, algohdr.SenderCertificate,
                                       request.Parameters.SecurityMode)
        response = ua.OpenSecureChannelResponse()
        response.ResponseHeader.ServiceResult = ua.StatusCode(status)
        self.send_response(request.RequestHeader.RequestHandle, seqhdr, response, ua.MessageType.SecureOpen)

    return open_secure_channel
