"""MLLP (HL7 v2 over TCP): ``0x0B <message> 0x1C 0x0D``, one ACK per message, same handler as HTTP.

One thread per connection (an EHR interface engine keeps one or two connections open for
hours); each thread opens the tenant's scope for itself and closes its database connection
when the peer goes away. A frame larger than ``max_bytes`` gets an AR and the connection is
closed: we never buffer without bound. See HL7 v2 "Minimal Lower Layer Protocol", rev. 2.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import uuid

from django.db import close_old_connections, connection

from accounts.requestmeta import reset_request_meta, set_request_meta
from accounts.tenancy import tenant_scope
from integrations.hl7 import ack as acks
from integrations.hl7.er7 import SEGMENT_SEQUENCE_ERROR, Hl7Error, Location, decode
from integrations.hl7.services import hl7_receive

logger = logging.getLogger(__name__)
START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\x0d"
IDLE_TIMEOUT_SECONDS = 300
MAX_CONNECTIONS = 32


class FrameTooLarge(Exception):
    pass


def frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


def read_frames(sock: socket.socket, *, max_bytes: int):
    """Yield each framed message's bytes. Bytes outside a frame are dropped (MLLP says so);
    the trailing CR after 0x1C is optional in practice."""
    buffer = bytearray()
    while True:
        data = sock.recv(65536)
        if not data:
            return
        buffer += data
        while True:
            start = buffer.find(START_BLOCK)
            if start < 0:
                buffer.clear()
                break
            end = buffer.find(END_BLOCK, start)
            if end < 0:
                del buffer[:start]
                if len(buffer) > max_bytes + 1:
                    raise FrameTooLarge
                break
            if end - start - 1 > max_bytes:
                raise FrameTooLarge
            yield bytes(buffer[start + 1:end])
            del buffer[:end + 1]
            if buffer[:1] == CARRIAGE_RETURN:
                del buffer[:1]


def _too_large_ack(max_bytes: int) -> bytes:
    error = Hl7Error(f"The message is larger than {max_bytes} bytes.", location=Location("MSH", 1),
                     code=SEGMENT_SEQUENCE_ERROR, ack="AR")
    return acks.build_ack(acks.Header(), "AR", error.message, (error,)).encode()


class _ConnectionHandler(socketserver.BaseRequestHandler):
    server: MllpServer

    def handle(self) -> None:
        sock = self.request
        sock.settimeout(self.server.idle_timeout)
        # Audit events of this connection name the interface and the peer, like a web request's.
        meta = set_request_meta({"ip": self.client_address[0], "request_id": f"mllp-{uuid.uuid4().hex[:16]}",
                                 "system_actor": f"mllp:{self.server.server_address[1]}"})
        try:
            with tenant_scope(self.server.tenant):
                for payload in read_frames(sock, max_bytes=self.server.max_bytes):
                    answer = hl7_receive(tenant=self.server.tenant, actor=None, payload=decode(payload))
                    sock.sendall(frame(answer.encode()))
        except FrameTooLarge:
            logger.warning("mllp: oversized message refused from %s", self.client_address[0])
            self._send_quietly(frame(_too_large_ack(self.server.max_bytes)))
        except (TimeoutError, ConnectionError, OSError):
            pass  # the peer went quiet or away; nothing was half-processed (each message is atomic)
        finally:
            reset_request_meta(meta)
            connection.close()
            close_old_connections()

    def _send_quietly(self, data: bytes) -> None:
        try:
            self.request.sendall(data)
        except OSError:
            pass


class MllpServer(socketserver.ThreadingTCPServer):
    """``MllpServer((host, port), tenant=...)``; ``serve_forever()`` then ``stop()``."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, *, tenant, max_bytes: int, idle_timeout: float = IDLE_TIMEOUT_SECONDS,
                 max_connections: int = MAX_CONNECTIONS):
        self.tenant = tenant
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(address, _ConnectionHandler)

    def verify_request(self, request, client_address) -> bool:
        return self._slots.acquire(blocking=False)  # over the limit: the connection is closed at once

    def process_request_thread(self, request, client_address):
        with self._lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.discard(request)
            self._slots.release()

    def stop(self) -> None:
        """Stop accepting, then end idle connections (a message being handled finishes first:
        its transaction commits or rolls back as a whole)."""
        self.shutdown()
        with self._lock:
            for sock in list(self._open):
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        self.server_close()
