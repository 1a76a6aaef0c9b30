"""A stand-in for an asyncio transport: the server's batch loop without a socket.

Shared by tests/unit/test_server_batch.py and benchmarks/bench_loop.py (so it
imports nothing but the standard library).
"""

from __future__ import annotations


class FakeTransport:
    """Collects what the server writes; the rest of the transport API as no-ops."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False
        self.aborted = False
        self.unsent = 0  # what get_write_buffer_size reports: bytes the peer has not read yet
        self.stalled = False  # the peer reads nothing: every write adds to ``unsent``

    def write(self, data: bytes | bytearray) -> None:
        self.data += data
        if self.stalled:
            self.unsent += len(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def get_extra_info(self, name: str) -> None:
        return None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
