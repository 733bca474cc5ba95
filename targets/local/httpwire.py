"""One HTTP/1.1 connection as the router holds it: an h11 state machine on an asyncio stream pair.

h11 does the parsing and the framing (Content-Length, chunked, close-delimited, HEAD, 1xx, keep-alive);
this module only moves bytes between it and the socket, and remembers what the router's retry rule needs
to know: whether the peer sent any byte of its answer, and whether it closed the connection.

It sits on the router's data path, so it avoids work per message where it can: one write per batch of
events, no drain while the socket took everything, and headers filtered in one pass.
"""

from __future__ import annotations

import asyncio
from typing import cast

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

    __slots__ = ("_transport", "_unparsed", "bytes_received", "h11", "peer_closed", "reader", "writer")

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.h11 = h11.Connection(role, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.reader = reader
        self.writer = writer
        self._transport = writer.transport
        self.bytes_received = 0  # over the connection's life: the retry rule compares it before and after
        self.peer_closed = False
        # False while h11 holds no byte it has not parsed (and saw no close): then the next event needs a
        # read first, and asking h11 before it (a NEED_DATA answer) would cost as much as parsing a header.
        self._unparsed = False

    async def next_event(self) -> h11.Event:
        """The next event from the peer. Raises h11.RemoteProtocolError on bytes that are not HTTP/1.1,
        including a connection closed in the middle of a message (then `peer_closed` is set)."""
        connection = self.h11
        while True:
            if self._unparsed:
                event = connection.next_event()
                if event is h11.PAUSED:
                    # The router reads one message per cycle, so only a protocol switch (CONNECT, Upgrade)
                    # that h11 waits to see answered gets here; the router serves neither.
                    raise h11.RemoteProtocolError("the peer sent more before this message was answered", 400)
                if event is not h11.NEED_DATA:
                    # Those two are the only answers that are not events (and h11's events are ABCs, whose
                    # isinstance is slow enough to show on the data path).
                    return cast(h11.Event, event)
            try:
                data = await self.reader.read(READ_BYTES)
            except ConnectionError:
                data = b""  # a reset is a close as far as the message is concerned
            if not data:
                self.peer_closed = True
            self.bytes_received += len(data)
            connection.receive_data(data)
            self._unparsed = True

    def start_next_cycle(self) -> None:
        """Get ready for the next message on a connection that is `reusable` (h11.start_next_cycle)."""
        connection = self.h11
        connection.start_next_cycle()
        unparsed, closed = connection.trailing_data
        self._unparsed = closed or bool(unparsed)

    def send(self, *events: h11.Event) -> None:
        """Frame `events` and hand them to the socket in one write (awaiting drain is the caller's)."""
        send = self.h11.send
        self.writer.write(b"".join([send(event) or b"" for event in events]))

    async def drain(self) -> None:
        """Wait while the socket holds back what was written, and raise ConnectionError once it broke.
        A socket that took everything (the usual case for a small answer) costs no await at all."""
        transport = self._transport
        if transport.get_write_buffer_size() or transport.is_closing():
            await self.writer.drain()

    @property
    def reusable(self) -> bool:
        """Both sides finished their message, neither asked to close, and the peer sent nothing beyond its
        message (from a pod that would be an answer to no request, such as a body after a HEAD answer)."""
        connection = self.h11
        return (connection.our_state is h11.DONE and connection.their_state is h11.DONE
                and not (connection.our_role is h11.CLIENT and connection.trailing_data[0]))

    @property
    def stale(self) -> bool:
        """An idle connection the peer has closed, or that failed, as far as the event loop has seen."""
        return (self.peer_closed or self.reader.at_eof() or self.reader.exception() is not None
                or self._transport.is_closing())

    def close(self) -> None:
        self.writer.close()


def end_to_end(message: h11.Request | h11.Response) -> tuple[Headers, bytes | None]:
    """The headers a proxy forwards, and the Content-Length that framed the message (None if chunked).

    Forwarded are all but the hop-by-hop headers, those the Connection header names, and Content-Length,
    which belongs to the framing the proxy chooses for what it sends.
    """
    forwarded: Headers = []
    named: set[bytes] = set()  # what the Connection header names: rare, so filtered in a second pass
    length: bytes | None = None
    chunked = False
    for raw, value in message.headers.raw_items():
        name = raw.lower()
        if name not in _NOT_FORWARDED:
            forwarded.append((raw, value))
        elif name == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True  # chunked framing wins over a Content-Length (RFC 9112 6.3)
    named -= _NOT_FORWARDED  # "Connection: keep-alive" names a header that is dropped anyway
    if named:
        forwarded = [(raw, value) for raw, value in forwarded if raw.lower() not in named]
    return forwarded, None if chunked else length
