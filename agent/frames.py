"""rpyc's frame format and the limits both halves hold it to, without importing rpyc.

A frame is ``!LB`` (body length, compressed flag), the body (zlib when flagged), then
``\\n``. The agent's channel (agent.channel) and the observer's client (observer.rpc)
read frames through these; the observer's CLI never imports rpyc itself.
"""

from __future__ import annotations

import struct
import zlib

from agent.codec import MAX_PAYLOAD

FRAME_HEADER = struct.Struct("!LB")  # rpyc's: body length, compressed flag
FLUSHER = b"\n"  # rpyc ends every frame with it
COMPRESSION_THRESHOLD = 3000  # rpyc's Channel compresses bodies longer than this
COMPRESSION_LEVEL = 1
# The largest request the agent accepts, before or after inflating. Requests are tiny:
# a call name and a few builtins; the biggest legitimate one is a string argument at the
# service's 10,000-character limit (<= 40 KB of UTF-8) or a locals path of 16 labels of
# <= 100 characters each (~7 KB). 64 KiB keeps a margin over both.
MAX_REQUEST_FRAME = 64 * 1024
# What the observer accepts from an agent: any reply decode_envelope would accept (a
# payload inflating to MAX_PAYLOAD at most) fits with room to spare; a 4 GiB header or a
# bomb from a compromised host does not.
MAX_REPLY_FRAME = MAX_PAYLOAD + 1024 * 1024


class FrameError(ValueError):
    """A frame its reader refuses: the reason, to drop the peer with."""


def inflate(data: bytes | bytearray, max_frame: int) -> bytes:
    """A compressed body inflated to at most ``max_frame`` bytes; FrameError when it
    holds more, is not zlib data, or is truncated or followed by other bytes."""
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(data, max_frame + 1)
    except zlib.error:
        raise FrameError("frame is not valid zlib data") from None
    if len(body) > max_frame or inflater.unconsumed_tail:
        raise FrameError(f"compressed frame of {len(data)} bytes inflates beyond {max_frame}")
    if not inflater.eof or inflater.unused_data:
        raise FrameError("compressed frame is truncated or has trailing bytes")
    return body
