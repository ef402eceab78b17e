"""Property tests of the wire: records round-trip exactly; garbage never crashes a decoder."""

from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import codec, schema
from agent.wire import HandshakeError, parse_fingerprint, recv_frame

finite = st.floats(allow_nan=False, allow_infinity=False)
st.register_type_strategy(float, finite)


@pytest.mark.parametrize("record", schema.RECORDS, ids=lambda r: r.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_record_round_trips(record, data):
    value = data.draw(st.from_type(record))
    decoded = codec.decode_as(record, codec.decode_envelope(codec.encode_ok(value)))
    assert decoded == value


@settings(max_examples=30, deadline=None)
@given(st.lists(st.from_type(schema.HistorySample), max_size=5000))
def test_long_lists_are_sliced_but_identical(samples):
    payload = codec.encode_ok(tuple(samples))
    out = codec.decode_as(tuple[schema.HistorySample, ...], codec.decode_envelope(payload))
    assert out == tuple(samples)


@given(st.binary(max_size=2000))
def test_garbage_payloads_raise_wire_error_only(blob):
    try:
        envelope = codec.decode_envelope(blob)
    except codec.WireError:
        return
    with contextlib.suppress(codec.WireError):
        codec.decode_as(schema.ProcessInfo, envelope)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c, max_size=5),
        max_leaves=30,
    )
)
def test_wrong_shapes_raise_wire_error_only(data):
    for record in (schema.TaskInfo, schema.Snapshot, schema.History):
        with contextlib.suppress(codec.WireError):
            codec.from_wire(record, data)


def test_bool_is_not_accepted_as_int_and_error_envelopes_decode():
    with pytest.raises(codec.WireError):
        codec.from_wire(int, True)
    env = codec.decode_envelope(codec.encode_error("not-found", "no task task-1"))
    assert (env.ok, env.error, env.message) == (False, "not-found", "no task task-1")


def test_decompression_is_bounded():
    import json
    import zlib

    bomb = b"Z" + zlib.compress(json.dumps({"v": 1, "ok": True, "data": "x" * 5_000_000}).encode())
    with pytest.raises(codec.WireError, match="larger"):
        codec.decode_envelope(bomb, max_size=1_000_000)


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

    raw_value, expected = codec.RawJSON(json.dumps(inner)), inner
    for level in range(depth):
        raw_value, expected = (
            ([outer, raw_value], [outer, expected])
            if level % 2
            else (
                {"k": raw_value, "o": outer},
                {"k": expected, "o": outer},
            )
        )
    envelope = codec.decode_envelope(codec.encode_ok(raw_value))
    assert envelope.data == expected


# ---------------------------------------------------------------- bulk rows
#
# Long lists of flat records (tasks, threads, history samples, ...) decode through a bulk
# path. Its contract: for any payload it gives what the row-by-row decoder gives, the same
# records or a WireError, never another exception and never a record of a wrong type.

FLAT = [r for r in schema.RECORDS if codec._rows_decoder(r, lambda data: data) is not None]


class Sub(str):
    """A str that is not exactly a str: the decoders accept only exact types."""


json_cells = (
    json_values
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.just(Sub("task-1"))
    | st.tuples(st.text(max_size=3))
)


def row_by_row(record, data):
    """The reference: the generic decoder of one record, applied to each row."""
    if type(data) is not list:
        raise codec.WireError("not a list")
    decode = codec._decoder(record)
    return tuple(decode(row) for row in data)


def outcome(decode, *args):
    """('ok', value) or ('error', None) for a WireError; anything else propagates."""
    try:
        return "ok", decode(*args)
    except codec.WireError:
        return "error", None


def wire_rows(values, at_least):
    """Encoded rows of ``values`` repeated to at least ``at_least`` rows, each its own list."""
    rows = [values[i % len(values)] for i in range(max(at_least, len(values)))]
    return codec.decode_envelope(codec.encode_ok(tuple(rows))).data


def test_the_bulk_path_covers_the_big_lists():
    assert {
        schema.TaskInfo,
        schema.ThreadInfo,
        schema.LoopInfo,
        schema.ChildInfo,
        schema.HistorySample,
        schema.AuditRecord,
        schema.Variable,
    } <= set(FLAT)
    assert schema.ProcessInfo not in FLAT and schema.Snapshot not in FLAT  # nested records


@pytest.mark.parametrize("swap", [True, False], ids=["class-swap", "constructor"])
@pytest.mark.parametrize("record", FLAT, ids=lambda r: r.__name__)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bulk_rows_equal_the_row_by_row_decoder(record, swap, data):
    values = data.draw(st.lists(st.from_type(record), min_size=1, max_size=6))
    wire = wire_rows(values, codec.BULK_ROWS)
    bulk = codec._rows_decoder(record, lambda data: row_by_row(record, data), swap=swap)
    for got in (bulk(wire), codec.from_wire(tuple[record, ...], wire)):
        assert got == row_by_row(record, wire)
        assert all(type(r) is record for r in got)
        assert [list(vars(r).items()) for r in got] == [
            list(vars(r).items()) for r in row_by_row(record, wire)
        ]


@pytest.mark.parametrize("record", FLAT, ids=lambda r: r.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bulk_rows_reject_what_the_row_by_row_decoder_rejects(record, data):
    """One row spoiled anywhere (a cell of any type, an item of a list field, a row too
    short, too long, not a list, the payload not a list): same outcome both ways."""
    values = data.draw(st.lists(st.from_type(record), min_size=1, max_size=4))
    wire = wire_rows(values, codec.BULK_ROWS)
    index = data.draw(st.integers(0, len(wire) - 1))
    row = wire[index]
    lists = [i for i, value in enumerate(row) if type(value) is list]
    how = data.draw(st.sampled_from(["cell", "item", "short", "long", "row", "payload"]))
    if how == "item" and lists:
        cell = row[data.draw(st.sampled_from(lists))]
        cell.insert(data.draw(st.integers(0, len(cell))), data.draw(json_cells))
    elif how in ("cell", "item"):
        row[data.draw(st.integers(0, len(row) - 1))] = data.draw(json_cells)
    elif how == "short":
        del row[data.draw(st.integers(0, len(row) - 1)) :]
    elif how == "long":
        row.extend(data.draw(st.lists(json_cells, min_size=1, max_size=3)))
    elif how == "row":
        wire[index] = data.draw(json_cells.filter(lambda v: type(v) is not list))
    else:
        wire = data.draw(json_cells.filter(lambda v: type(v) is not list))
    expected = outcome(row_by_row, record, wire)
    assert outcome(codec.from_wire, tuple[record, ...], wire) == expected
    bulk = codec._rows_decoder(record, lambda data: row_by_row(record, data), swap=False)
    assert outcome(bulk, wire) == expected
    if how in ("short", "row", "payload"):
        assert expected[0] == "error"


def test_a_bad_last_row_of_many_is_a_wire_error():
    rows = wire_rows([schema.HistorySample(1.0, 2.0, 3, 4, 5, None, 6, None)], 10_000)
    rows[-1][2] = True  # rss: a bool is not an int
    with pytest.raises(codec.WireError, match="HistorySample.rss"):
        codec.from_wire(tuple[schema.HistorySample, ...], rows)
    rows[-1][2] = 3
    rows[-1][1] = 7  # cpu_percent: an int where a float goes is made a float
    out = codec.from_wire(tuple[schema.HistorySample, ...], rows)
    assert type(out[-1].cpu_percent) is float and out[-1] == schema.HistorySample(
        1.0, 7.0, 3, 4, 5, None, 6, None
    )


def said(decode, data):
    """('ok', the value and its fields' types) or ('error', the WireError's message)."""
    try:
        value = decode(data)
    except codec.WireError as exc:
        return "error", str(exc)
    return "ok", value, [type(v) for v in vars(value).values()]


@pytest.mark.parametrize("record", schema.RECORDS, ids=lambda r: r.__name__)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_record_decodes_the_same_before_and_after_its_decoder_is_compiled(record, data):
    """A record type's first codec.TIER_UP records go through a loop over its fields, the
    rest through generated code: the same records from good data, the same WireError
    (same message) for a cell of any type anywhere, a row too short or not a list."""
    plan = codec._plan(record)
    loop, compiled = codec._loop_decoder(record, plan), codec._compiled_decoder(record, plan)
    wire = codec.decode_envelope(codec.encode_ok(data.draw(st.from_type(record)))).data
    how = data.draw(st.sampled_from(["good", "cell", "short", "long", "row"]))
    if how == "cell":
        wire[data.draw(st.integers(0, len(wire) - 1))] = data.draw(json_cells)
    elif how == "short":
        del wire[data.draw(st.integers(0, len(wire) - 1)) :]
    elif how == "long":
        wire.extend(data.draw(st.lists(json_cells, min_size=1, max_size=3)))
    elif how == "row":
        wire = data.draw(json_cells.filter(lambda v: type(v) is not list))
    assert said(loop, wire) == said(compiled, wire)
    if how == "good":
        assert said(loop, wire)[0] == "ok"


def test_a_record_type_decodes_alike_across_the_compile():
    """Its decoder, used past codec.TIER_UP records, switches to the compiled code: the
    records before and after are equal, and a bad one after is refused as before."""
    decode = codec._build_decoder(schema.TaskSite)
    wire = codec.to_wire(schema.TaskSite("c", "f", "x.py"))
    for _ in range(2):
        with pytest.raises(codec.WireError, match=r"bad TaskSite.file: int 3"):
            decode(["c", "f", 3])
        got = [decode(wire) for _ in range(codec.TIER_UP)]
        assert got == [schema.TaskSite("c", "f", "x.py")] * codec.TIER_UP
