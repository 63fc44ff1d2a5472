"""Hostile code tries to exhaust what it shares with others: processes, memory,
disk, the output channel to the runner, and the runner's JSON parser."""

from __future__ import annotations

import errno

from tests.security.conftest import node_code, rss_mb, runtime

# The worker's processes may grow a little while they serve; a node that made the
# runner buffer its flood would show as hundreds of megabytes.
WORKER_RSS_BUDGET_MB = 400


def worker_rss(sandbox) -> float:
    return max(rss_mb(pid) for pid in sandbox.worker_pids())


FORK_BOMB = node_code(
    """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
value = None
"""
)


def test_fork_bomb_meets_the_pids_limit_and_ends_at_its_timeout(sandbox):
    bombed = sandbox.attack(FORK_BOMB, timeout_s=4, pids=32)
    assert bombed.state == "failed"
    # runc: the pids cgroup stops the bomb and the timeout ends it. runsc: every
    # process of the node also costs gVisor's kernel memory and a host stub, so the
    # bomb meets the memory limit or the host pids limit first (gVisor then exits);
    # either way it ends, clearly, inside its NPU.
    expected = {"NodeTimeout"} if runtime() == "runc" else {"NodeTimeout", "OutOfMemory", "NpuCrashed"}
    assert bombed.error["error_type"] in expected, bombed.error
    sandbox.assert_execution_left_nothing(bombed)


SPREAD_MEMORY_BOMB = node_code(
    """
import os, time
children = []
for _ in range(6):
    pid = os.fork()
    if pid == 0:
        hog = bytearray(96 * 1024 * 1024)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        time.sleep(1)
        os._exit(0)
    children.append(pid)
value = [os.waitpid(pid, 0)[1] for pid in children]  # killed hogs show signal 9
"""
)


def test_memory_bomb_spread_over_processes_meets_one_shared_limit_and_is_reported(sandbox):
    bombed = sandbox.attack(SPREAD_MEMORY_BOMB, memory_mb=128, timeout_s=30)
    # 6 x 96 MiB against 128 MiB for the whole NPU: the kernel's OOM killer takes
    # the hogs, and the runner reports the node as killed for memory even though its
    # runtime survived to answer.
    assert bombed.state == "failed"
    if bombed.error["error_type"] == "NpuCrashed" and runtime() == "runsc":
        # Under load the kernel may kill gVisor's whole sandbox instead (the largest
        # process of the cgroup), and the engine does not flag that as an OOM kill
        # (google/gvisor#2433): the runner says the NPU was killed, and why it may be.
        assert "exit code 137" in bombed.error["message"], bombed.error
    else:
        assert bombed.error["error_type"] == "OutOfMemory", bombed.error
    assert "memory limit 128 MiB" in bombed.error["message"]
    assert worker_rss(sandbox) < WORKER_RSS_BUDGET_MB


FILL_TMP = node_code(
    """
import errno
chunk = b'x' * (1024 * 1024)
value = {'written': 0, 'errno': None}
files = 0
while value['errno'] is None and value['written'] < 2048 * 1024 * 1024:
    files += 1
    try:
        with open(f'/tmp/fill{files}', 'wb') as handle:
            for _ in range(32):
                handle.write(chunk)
                handle.flush()
                value['written'] += len(chunk)
    except OSError as exc:
        value['errno'] = exc.errno
"""
)


def test_filling_tmp_stops_at_its_size_limit(sandbox, settings):
    filled = sandbox.attack(FILL_TMP, memory_mb=256)
    assert filled.state == "succeeded", filled.error
    result = filled.outputs["value"]
    assert result["errno"] == errno.ENOSPC
    assert result["written"] <= settings.FLOWKIT_NPU_TMPFS_MB * 1024 * 1024


GIGABYTE_ON_STDOUT = node_code(
    """
import os
chunk = b'y' * (1024 * 1024 - 1) + b'\\n'
for _ in range(1024):
    os.write(1, chunk)
value = 'all written'
"""
)


def test_a_gigabyte_on_stdout_ends_with_an_output_flood_error(sandbox):
    flooded = sandbox.attack(GIGABYTE_ON_STDOUT)
    assert flooded.state == "failed"
    assert flooded.error["error_type"] == "OutputFlood"
    assert sum(len(line["message"]) for line in flooded.logs) <= 2 * 1024 * 1024
    assert worker_rss(sandbox) < WORKER_RSS_BUDGET_MB


def forged(body: str) -> str:
    """Code that writes straight to the runtime's protocol channel, bypassing the SDK
    (``send`` writes all of its bytes, as a pipe may take fewer at a time)."""
    prelude = (
        "import os\nfrom flowkit import _channel\nfd = _channel.current()._fd\n"
        "def send(data):\n    view = memoryview(data)\n"
        "    while view:\n        view = view[os.write(fd, view):]\n"
    )
    return node_code(prelude + body)


GIGABYTE_ON_THE_CHANNEL = forged(
    """
chunk = b'z' * (1024 * 1024)
for _ in range(1024):
    send(chunk)
value = 'all written'
"""
)


def test_a_gigabyte_forged_onto_the_protocol_channel_is_cut_off(sandbox):
    flooded = sandbox.attack(GIGABYTE_ON_THE_CHANNEL)
    assert flooded.state == "failed"
    assert flooded.error["error_type"] == "ProtocolViolation"
    assert "frame larger than" in flooded.error["message"]
    assert worker_rss(sandbox) < WORKER_RSS_BUDGET_MB


MANY_FRAMES_ON_THE_CHANNEL = forged(
    """
frame = b'{"type": "log", "level": "info", "stream": "stdout", "message": "' + b'w' * 60000 + b'"}\\n'
for _ in range(20000):
    send(frame)
value = 'all written'
"""
)


def test_a_flood_of_forged_log_frames_is_cut_off_at_the_total_byte_cap(sandbox):
    flooded = sandbox.attack(MANY_FRAMES_ON_THE_CHANNEL)
    assert flooded.state == "failed"
    assert flooded.error["error_type"] == "ProtocolViolation"
    assert "more than" in flooded.error["message"]
    assert worker_rss(sandbox) < WORKER_RSS_BUDGET_MB


FORGED_NAN_RESULT = forged(
    """
send(b'{"type": "result", "next_nodes": [], "outputs": {"value": NaN}, "status_message": "forged"}\\n')
import time
time.sleep(1)
value = 'never'
"""
)


def test_a_forged_result_holding_nan_ends_the_attempt_as_a_protocol_violation(sandbox):
    # Python's json reads NaN, which PostgreSQL refuses: accepted, it once left the
    # node "running" for good. The runtime never writes NaN, so the frame is forged.
    forged_nan = sandbox.attack(FORGED_NAN_RESULT)
    assert forged_nan.state == "failed"
    assert forged_nan.error["error_type"] == "ProtocolViolation"
    assert "not JSON" in forged_nan.error["message"]
    assert forged_nan.container_id, "the NPU it ran in is still named"


DEEP_OUTPUT = node_code("value = []\nfor _ in range(100000):\n    value = [value]")


def test_a_deeply_nested_output_is_refused_naming_its_port(sandbox):
    deep = sandbox.attack(DEEP_OUTPUT)
    assert deep.state == "failed"
    assert deep.error["port"] == "value"
    assert "nested too deeply" in deep.error["message"]


def deep_frame(depth: int) -> str:
    return forged(
        f"""
payload = b'{{"type": "result", "next_nodes": [], "status_message": "", "outputs": {{"value": '
payload += b'[' * {depth} + b']' * {depth} + b'}}}}\\n'
send(payload)
os._exit(0)
value = None
"""
    )


def test_a_forged_result_nested_beyond_the_parser_limit_is_a_protocol_violation(sandbox):
    deep = sandbox.attack(deep_frame(200_000))
    assert deep.state == "failed"
    assert deep.error["error_type"] == "ProtocolViolation"
    assert "not JSON" in deep.error["message"]


def nesting_depth(value: object) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth + 1 if value == [] else depth


def test_a_forged_result_nested_just_below_the_parser_limit_is_stored_intact(sandbox):
    # Deep enough to pass the runner's JSON parser; every walk after it (masking,
    # storing in PostgreSQL) must cope with it, not crash the task.
    deep = sandbox.attack(deep_frame(900))
    assert deep.state == "succeeded", deep.error
    assert nesting_depth(deep.outputs["value"]) == 900


HUGE_OUTPUT = node_code("value = {f'key{i}': i for i in range(2_000_000)}")


def test_a_huge_output_is_refused_inside_the_npu_naming_its_port(sandbox, settings):
    huge = sandbox.attack(HUGE_OUTPUT, memory_mb=512)
    assert huge.state == "failed"
    assert huge.error["port"] == "value"
    assert f"over the cap of {settings.FLOWKIT_NPU_MAX_OUTPUT_BYTES:,} bytes" in huge.error["message"]
