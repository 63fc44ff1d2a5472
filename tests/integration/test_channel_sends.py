"""Channel-layer sends from sync code (trace_monitor.recorder.send) go through one event
loop per process, over the real Redis layer: they reach the group's members from any
thread, and a forked child (a Celery pool process) sends through a loop of its own
rather than waiting on its parent's, whose thread it does not have."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

from channels.layers import get_channel_layer

from trace_monitor import recorder


def member_of(group: str) -> str:
    async def join() -> str:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return str(channel)

    return asyncio.run(join())


def receive(channel: str, count: int) -> list[dict[str, Any]]:
    async def take() -> list[dict[str, Any]]:
        layer = get_channel_layer()
        return [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(count)]

    return asyncio.run(take())


def test_sends_from_several_threads_share_one_loop_and_arrive():
    group = f"sends-{uuid.uuid4().hex}"
    channel = member_of(group)
    loop = recorder._sends.loop()
    threads = [
        threading.Thread(target=recorder.send, args=(group, {"type": "probe", "n": n})) for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(message["n"] for message in receive(channel, 4)) == [0, 1, 2, 3]
    assert recorder._sends.loop() is loop


def test_a_forked_child_sends_through_a_loop_of_its_own():
    group = f"forked-{uuid.uuid4().hex}"
    channel = member_of(group)
    recorder.send(group, {"type": "probe", "from": "parent"})  # the parent's loop exists
    pid = os.fork()
    if pid == 0:  # the child: send, and say how it went by the exit code
        try:
            recorder.send(group, {"type": "probe", "from": "child"})
            os._exit(0 if recorder._sends.loop().is_running() else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert sorted(message["from"] for message in receive(channel, 2)) == ["child", "parent"]
