"""Damage in a byte stream, at a known offset of the decoded output."""

from __future__ import annotations


class StreamDamaged(Exception):
    """The stream is corrupt or truncated at `offset`; the bytes before it are good.

    Raised by the decoders for corrupt compressed data; the tar walker raises
    its subclass `TarDamaged` for a bad header. Either way, what was decoded
    before `offset` is still listed and served.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset
