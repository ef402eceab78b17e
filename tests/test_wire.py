"""Property tests of the wire: records round-trip exactly; garbage never crashes a decoder."""

from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import schema
from agent.wire import HandshakeError, parse_fingerprint, recv_frame

finite = st.floats(allow_nan=False, allow_infinity=False)
st.register_type_strategy(float, finite)


@pytest.mark.parametrize("record", schema.RECORDS, ids=lambda r: r.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_record_round_trips(record, data):
    value = data.draw(st.from_type(record))
    decoded = schema.decode_as(record, schema.decode_envelope(schema.encode_ok(value)))
    assert decoded == value


@settings(max_examples=30, deadline=None)
@given(st.lists(st.from_type(schema.HistorySample), max_size=5000))
def test_long_lists_are_sliced_but_identical(samples):
    payload = schema.encode_ok(tuple(samples))
    out = schema.decode_as(tuple[schema.HistorySample, ...], schema.decode_envelope(payload))
    assert out == tuple(samples)


@given(st.binary(max_size=2000))
def test_garbage_payloads_raise_wire_error_only(blob):
    try:
        envelope = schema.decode_envelope(blob)
    except schema.WireError:
        return
    with contextlib.suppress(schema.WireError):
        schema.decode_as(schema.ProcessInfo, envelope)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c, max_size=5),
        max_leaves=30,
    )
)
def test_wrong_shapes_raise_wire_error_only(data):
    for record in (schema.TaskInfo, schema.Snapshot, schema.History):
        with contextlib.suppress(schema.WireError):
            schema.from_wire(record, data)


def test_bool_is_not_accepted_as_int_and_error_envelopes_decode():
    with pytest.raises(schema.WireError):
        schema.from_wire(int, True)
    env = schema.decode_envelope(schema.encode_error("not-found", "no task task-1"))
    assert (env.ok, env.error, env.message) == (False, "not-found", "no task task-1")


def test_decompression_is_bounded():
    import json
    import zlib

    bomb = b"Z" + zlib.compress(json.dumps({"v": 1, "ok": True, "data": "x" * 5_000_000}).encode())
    with pytest.raises(schema.WireError, match="larger"):
        schema.decode_envelope(bomb, max_size=1_000_000)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_handshake_frames_from_garbage(blob):
    a, b = socket.socketpair()
    try:
        a.sendall(blob)  # small enough for the socket buffer
        a.shutdown(socket.SHUT_WR)
        b.settimeout(5)
        try:
            message = recv_frame(b)
        except HandshakeError:
            return
        assert isinstance(message, dict)
    finally:
        a.close()
        b.close()


@given(
    st.binary(min_size=32, max_size=32),
    st.sampled_from(["", "sha256:", "SHA256:"]),
    st.booleans(),
    st.booleans(),
)
def test_fingerprint_parsing(digest, prefix, colons, upper):
    text = digest.hex()
    if colons:
        text = ":".join(text[i : i + 2] for i in range(0, 64, 2))
    if upper:
        text = text.upper()
    if prefix == "SHA256:":
        with pytest.raises(ValueError):
            parse_fingerprint(prefix + text)
        return
    assert parse_fingerprint(prefix + text) == digest


@given(st.text(max_size=80))
def test_bad_fingerprints_are_rejected_with_value_error(text):
    with contextlib.suppress(ValueError):
        assert len(parse_fingerprint(text)) == 32


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(json_values, json_values, st.integers(0, 5))
def test_raw_json_is_spliced_at_any_depth(outer, inner, depth):
    import json

    raw_value, expected = schema.RawJSON(json.dumps(inner)), inner
    for level in range(depth):
        raw_value, expected = (
            ([outer, raw_value], [outer, expected])
            if level % 2
            else (
                {"k": raw_value, "o": outer},
                {"k": expected, "o": outer},
            )
        )
    envelope = schema.decode_envelope(schema.encode_ok(raw_value))
    assert envelope.data == expected
