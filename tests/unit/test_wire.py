"""The runner's side of the wire: Docker's multiplexed stream in, the NPU's events out."""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_unit.limits import NodeLimits
from node_runner.wire import (
    LINE_MARGIN_BYTES,
    STDERR,
    STDOUT,
    ChunkReader,
    FrameReader,
    NpuJob,
    ProtocolViolation,
    StreamDemuxer,
    frame_limits,
    parse_frame,
    parse_server_event,
    request,
)
from tests.unit.conftest import ADD_NODE, returning, run_job_bytes, run_node

LIMITS = NodeLimits(
    timeout_s=60.0,
    memory_mb=256,
    cpus=1.0,
    pids=64,
    network=False,
    tmpfs_mb=64,
    max_output_bytes=8 * 1024 * 1024,
    max_log_lines=5000,
    max_log_bytes=2 * 1024 * 1024,
    max_log_line_bytes=16 * 1024,
    flood_bytes=32 * 1024 * 1024,
)


def multiplexed(chunks: list[tuple[int, bytes]]) -> bytes:
    """What Docker sends on a non-TTY attach: an 8-byte header before each chunk."""
    return b"".join(struct.pack(">BxxxL", stream, len(payload)) + payload for stream, payload in chunks)


def demux_in_pieces(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    demuxer = StreamDemuxer()
    chunks: list[tuple[int, bytes]] = []
    edges = [0, *sorted(cuts), len(data)]
    for start, end in itertools.pairwise(edges):
        chunks += demuxer.feed(data[start:end])
    return chunks


INTERLEAVED = [
    (STDOUT, b'{"type": "started"}\n'),
    (STDERR, b"Traceback (most recent call last):\n"),
    (STDOUT, b'{"type": "log", "level": "info", "stream": "stdout", "message": "hi"}\n'),
    (STDERR, b""),
    (STDOUT, bytes(range(256))),
    (STDERR, b"x" * 70_000),
]


# --- StreamDemuxer ------------------------------------------------------------------------------


def test_the_demuxer_splits_interleaved_stdout_and_stderr_fed_in_one_piece():
    assert StreamDemuxer().feed(multiplexed(INTERLEAVED)) == INTERLEAVED


def test_the_demuxer_gives_the_same_chunks_when_fed_byte_by_byte():
    data = multiplexed(INTERLEAVED)

    assert demux_in_pieces(data, list(range(1, len(data)))) == INTERLEAVED


def test_the_demuxer_holds_back_an_incomplete_chunk_until_the_rest_arrives():
    data = multiplexed([(STDOUT, b"hello")])
    demuxer = StreamDemuxer()

    assert demuxer.feed(data[:6]) == []
    assert demuxer.feed(data[6:10]) == []
    assert demuxer.feed(data[10:]) == [(STDOUT, b"hello")]


@given(
    st.lists(st.tuples(st.sampled_from([STDOUT, STDERR]), st.binary(max_size=300)), max_size=12),
    st.data(),
)
def test_any_split_of_a_multiplexed_stream_demuxes_to_the_same_chunks(chunks, data):
    stream = multiplexed(chunks)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20))

    assert demux_in_pieces(stream, cuts) == chunks


# --- FrameReader and parse_frame ----------------------------------------------------------------


def test_the_frame_reader_yields_events_whose_lines_span_several_feeds():
    reader = FrameReader(max_frame_bytes=1024)

    assert reader.feed(b'{"type": "sta') == []
    assert reader.feed(b'rted", "pid": 7}\n{"type": "log", "mess') == [{"type": "started", "pid": 7}]
    assert reader.feed(b'age": "a"}\n\n{"type": "result"}\n') == [
        {"type": "log", "message": "a"},
        {"type": "result"},
    ]
    assert reader.finish() == []


def test_the_frame_reader_returns_a_last_frame_without_newline_on_finish():
    reader = FrameReader(max_frame_bytes=1024)

    assert reader.feed(b'{"type": "error", "message": "x"}') == []
    assert reader.finish() == [{"type": "error", "message": "x"}]


def test_the_frame_reader_refuses_a_partial_frame_over_the_cap():
    reader = FrameReader(max_frame_bytes=100)
    reader.feed(b'{"type": "log", "message": "' + b"a" * 50)

    with pytest.raises(ProtocolViolation, match="larger than 100 bytes"):
        reader.feed(b"a" * 60)


def test_the_frame_reader_refuses_a_whole_frame_over_the_cap_that_arrives_in_one_feed():
    frame = json.dumps({"type": "log", "message": "a" * 200}).encode() + b"\n"

    with pytest.raises(ProtocolViolation, match="larger than 100 bytes"):
        FrameReader(max_frame_bytes=100).feed(frame)


def test_the_frame_reader_accepts_a_frame_of_exactly_the_cap():
    message = "m" * (100 - len(json.dumps({"type": "log", "message": ""})))
    frame = json.dumps({"type": "log", "message": message}).encode()
    assert len(frame) == 100

    assert FrameReader(max_frame_bytes=100).feed(frame + b"\n") == [{"type": "log", "message": message}]


@pytest.mark.parametrize(
    "line",
    [
        b"not json", b'{"type": "log"', b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "result", "outputs": {"x": NaN}}', b'{"type": "result", "outputs": {"x": Infinity}}',
        b'{"type": "log", "message": "m", "ts": -Infinity}',
    ],
    ids=["text", "truncated", "binary", "deeply-nested", "nan", "infinity", "minus-infinity"],
)  # fmt: skip
def test_a_frame_that_is_not_json_is_a_protocol_violation(line):
    with pytest.raises(ProtocolViolation, match="not JSON"):
        parse_frame(line)


@pytest.mark.parametrize(
    "line",
    [b'{"type": "shell"}', b'{"message": "no type"}', b'["started"]', b'"started"', b"42"],
    ids=["unknown-type", "no-type", "list", "string", "number"],
)
def test_a_frame_of_an_unknown_kind_is_a_protocol_violation(line):
    with pytest.raises(ProtocolViolation, match="unknown type"):
        parse_frame(line)


def test_the_frame_reader_raises_on_a_bad_frame_among_good_ones():
    reader = FrameReader(max_frame_bytes=1024)

    with pytest.raises(ProtocolViolation):
        reader.feed(b'{"type": "started"}\nprint output that escaped\n')


# --- NpuJob and frame_limits --------------------------------------------------------------------


def test_an_encoded_job_round_trips_through_json_and_carries_the_limits():
    job = NpuJob(
        node_id="n-1",
        label="Add ✓",
        code=ADD_NODE,
        inputs={"a": 2, "b": [1, "two"]},
        secrets={"TOKEN": 'quo"te\n'},
    )
    encoded = job.encode(LIMITS)
    document = json.loads(encoded)

    assert encoded.isascii()
    assert document["protocol"] == 2
    assert document["code"] == ADD_NODE
    assert document["inputs"] == {"a": 2, "b": [1, "two"]}
    assert document["secrets"] == {"TOKEN": 'quo"te\n'}
    assert (document["node"]["id"], document["node"]["label"]) == ("n-1", "Add ✓")
    assert document["limits"] == {
        "max_output_bytes": LIMITS.max_output_bytes,
        "max_log_lines": LIMITS.max_log_lines,
        "max_log_bytes": LIMITS.max_log_bytes,
        # Longer than the stored line: the runner masks a line before it cuts it.
        "max_log_line_bytes": LIMITS.max_log_line_bytes + LINE_MARGIN_BYTES,
        "flood_bytes": LIMITS.flood_bytes,
    }


def test_the_runtime_accepts_an_encoded_job_and_its_answer_passes_the_frame_reader():
    job = NpuJob(node_id="n-1", label="Add", code=ADD_NODE, inputs={"a": 2, "b": 3}, secrets={})
    stdout = run_job_bytes(job.encode(LIMITS)).stdout
    max_frame, max_total = frame_limits(LIMITS)
    reader = FrameReader(max_frame)
    events = [event for byte in range(len(stdout)) for event in reader.feed(stdout[byte : byte + 1])]

    assert [event["type"] for event in events] == ["started", "log", "result"]
    assert events[-1]["outputs"] == {"out": 5}
    assert len(stdout) <= max_total


def test_the_largest_output_the_runtime_allows_fits_in_one_frame():
    cap = 64 * 1024
    # Non-ASCII text grows sixfold on the wire (ensure_ascii); the runtime caps the encoded size.
    run = run_node(returning(f"{{'out': chr(0xe9) * (({cap} - 2) // 6)}}"), max_output_bytes=cap)
    max_frame, _ = frame_limits(replace(LIMITS, max_output_bytes=cap))
    result_line = run.stdout.rstrip(b"\n").split(b"\n")[-1]

    assert run.result["outputs"]["out"] == "é" * ((cap - 2) // 6)
    assert len(result_line) <= max_frame
    assert FrameReader(max_frame).feed(result_line + b"\n")[0]["type"] == "result"


def test_frame_limits_grow_with_max_output_bytes():
    small_frame, small_total = frame_limits(replace(LIMITS, max_output_bytes=1024))
    large_frame, large_total = frame_limits(replace(LIMITS, max_output_bytes=1024 + 5000))

    assert large_frame - small_frame == 5000
    assert large_total - small_total == 5000


def test_the_largest_frame_leaves_room_for_a_full_output_and_a_full_log_line():
    max_frame, max_total = frame_limits(LIMITS)

    assert max_frame > LIMITS.max_output_bytes + LIMITS.max_log_line_bytes
    assert max_total > LIMITS.max_output_bytes + LIMITS.max_log_bytes
    assert max_total >= max_frame


# --- The fork server's framing ------------------------------------------------------------------


def test_requests_are_fixed_size_headers_naming_the_execution():
    header = request("run", "x1", 1234, 0)
    assert len(header) == 64
    assert header.endswith(b"\n")
    assert header.split() == [b"run", b"x1", b"1234", b"0"]


def test_a_request_for_an_execution_with_an_unsafe_name_is_refused():
    with pytest.raises(ValueError, match="not an execution name"):
        request("kill", "x 1\nquit")


def test_chunks_split_into_tagged_payloads_across_reads():
    reader = ChunkReader()
    event = b'{"type":"ready"}'
    stream = b"@ %d\n%sx1 6\nab\ncd\n" % (len(event), event)
    chunks = [chunk for byte in range(len(stream)) for chunk in reader.feed(stream[byte : byte + 1])]
    assert chunks == [("@", event), ("x1", b"ab\ncd\n")]


@pytest.mark.parametrize("junk", [b"x1 12a\n", b"no-length\n", b"a" * 60, b"x1 -1\n", b"x y 2\n"])
def test_a_malformed_chunk_header_is_a_protocol_violation(junk):
    with pytest.raises(ProtocolViolation, match="malformed chunk"):
        ChunkReader().feed(junk)


def test_server_events_of_unknown_type_are_refused():
    assert parse_server_event(b'{"type": "exited", "exec": "x1"}')["exec"] == "x1"
    with pytest.raises(ProtocolViolation, match="unknown event"):
        parse_server_event(b'{"type": "result"}')
