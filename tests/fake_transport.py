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

    def write(self, data: bytes | bytearray) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> None:
        return None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
