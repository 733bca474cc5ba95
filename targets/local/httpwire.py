"""One HTTP/1.1 connection as the router holds it: an h11 state machine on an asyncio stream pair.

h11 does the parsing and the framing (Content-Length, chunked, close-delimited, HEAD, 1xx, keep-alive);
this module only moves bytes between it and the socket, and remembers what the router's retry rule needs
to know: whether the peer sent any byte of its answer, and whether it closed the connection.
"""

from __future__ import annotations

import asyncio

import h11

# A message head larger than this is refused (h11 raises RemoteProtocolError, the router answers 431/502).
MAX_HEAD_BYTES = 64 * 1024
READ_BYTES = 64 * 1024

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop headers (RFC 9110 7.6.1) describe one connection, never the message: a proxy drops them and
# frames what it forwards itself. `expect` too: the router answers 100-continue itself.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
                        b"trailer", b"upgrade", b"expect"})
_NOT_FORWARDED = HOP_BY_HOP | {b"content-length"}


class HTTPConnection:
    """`role` is h11.SERVER for a client's connection to us, h11.CLIENT for ours to a pod."""

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.h11 = h11.Connection(role, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.reader = reader
        self.writer = writer
        self.bytes_received = 0  # over the connection's life: the retry rule compares it before and after
        self.peer_closed = False

    async def next_event(self) -> h11.Event:
        """The next event from the peer. Raises h11.RemoteProtocolError on bytes that are not HTTP/1.1,
        including a connection closed in the middle of a message (then `peer_closed` is set)."""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                try:
                    data = await self.reader.read(READ_BYTES)
                except ConnectionError:
                    data = b""  # a reset is a close as far as the message is concerned
                if not data:
                    self.peer_closed = True
                self.bytes_received += len(data)
                self.h11.receive_data(data)
                continue
            if event is h11.PAUSED:
                # The router reads one message per cycle, so only a protocol switch (CONNECT, Upgrade) that
                # h11 waits to see answered gets here; the router serves neither.
                raise h11.RemoteProtocolError("the peer sent more before this message was answered", 400)
            assert isinstance(event, h11.Event)
            return event

    def send(self, *events: h11.Event) -> None:
        """Frame `events` and hand them to the socket in one write (awaiting drain is the caller's)."""
        self.writer.write(b"".join(self.h11.send(event) or b"" for event in events))

    async def drain(self) -> None:
        await self.writer.drain()

    @property
    def reusable(self) -> bool:
        """Both sides finished their message, neither asked to close, and the peer sent nothing beyond its
        message (from a pod that would be an answer to no request, such as a body after a HEAD answer)."""
        return (self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
                and not (self.h11.our_role is h11.CLIENT and self.h11.trailing_data[0]))

    @property
    def stale(self) -> bool:
        """An idle connection the peer has closed, or that failed, as far as the event loop has seen."""
        return (self.peer_closed or self.reader.at_eof() or self.reader.exception() is not None
                or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


def end_to_end(message: h11.Request | h11.Response) -> tuple[Headers, bytes | None]:
    """The headers a proxy forwards, and the Content-Length that framed the message (None if chunked).

    Forwarded are all but the hop-by-hop headers, those the Connection header names, and Content-Length,
    which belongs to the framing the proxy chooses for what it sends.
    """
    items = message.headers.raw_items()
    drop = _NOT_FORWARDED
    length: bytes | None = None
    chunked = False
    for raw, value in items:
        name = raw.lower()
        if name == b"connection":
            drop = drop | {token.strip().lower() for token in value.split(b",")}
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True  # chunked framing wins over a Content-Length (RFC 9112 6.3)
    return [(raw, value) for raw, value in items if raw.lower() not in drop], None if chunked else length
