"""WebSocket consumers: one run (/ws/runs/<id>/[?after=SEQ]) and the resource
monitor (/ws/monitor/). Both are read-only; control goes through the API, where
roles and CSRF apply."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from control_unit import run_stream
from control_unit.models import Run
from trace_monitor import resource_monitor
from trace_monitor.recorder import MONITOR_GROUP, run_group
from web_ui.roles import VIEWER, has_role

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_MESSAGE_TOO_BIG = 1009
MAX_CLIENT_FRAME_BYTES = 64 * 1024
# A message the channel layer dropped (a full channel, a restarted Redis) is found
# by the next event's sequence number, or by this check when no event follows.
CATCH_UP_EVERY_S = 3.0


class _ReadOnlyConsumer(AsyncJsonWebsocketConsumer):
    async def refuse(self, code: int) -> None:
        """Accept, then close with ``code``: closing before accepting is answered at the
        handshake with HTTP 403, and the page would see 1006 for every reason alike,
        not the 44xx that tells it to stop retrying and say why."""
        await self.accept()
        await self.close(code=code)

    async def allowed(self) -> bool:
        """Close with the reason and return False unless a viewer (or more) asks."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return False
        if not await database_sync_to_async(has_role)(user, VIEWER):
            await self.refuse(CLOSE_FORBIDDEN)
            return False
        return True

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        # Never parsed: whatever a client sends, garbage included, gets the same answer,
        # and a frame too large to be anything honest closes the stream.
        if len(text_data or "") + len(bytes_data or b"") > MAX_CLIENT_FRAME_BYTES:
            await self.close(code=CLOSE_MESSAGE_TOO_BIG)
            return
        await self.send_json({"type": "error", "message": "this stream is read-only"})


class RunConsumer(_ReadOnlyConsumer):
    """Sends a snapshot (or, to a client that reconnects with ?after=SEQ, exactly the
    events it missed), then every event in sequence order, in batches."""

    async def connect(self) -> None:
        self.run_id = ""
        self.last_seq = 0
        self.group = ""
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        if not await self.allowed():
            return
        # The route takes any segment, so that a malformed id is "no such run" (4404)
        # rather than a routing error, which the server answered with HTTP 500.
        try:
            self.run_id = str(UUID(self.scope["url_route"]["kwargs"]["run_id"]))
        except ValueError:
            await self.refuse(CLOSE_NOT_FOUND)
            return
        if not await database_sync_to_async(Run.objects.filter(id=self.run_id).exists)():
            await self.refuse(CLOSE_NOT_FOUND)
            return
        self.group = run_group(self.run_id)
        # Join before reading, so nothing committed in between is missed; sequence
        # numbers drop what arrives twice.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        after = _after(self.scope.get("query_string", b""))
        async with self._lock:
            if after is None:
                snapshot = await database_sync_to_async(run_stream.snapshot)(self.run_id)
                self.last_seq = snapshot["seq"]
                await self.send_json(snapshot)
            else:
                self.last_seq = after
                await self._catch_up()
        self._watch = asyncio.create_task(self._watch_for_missed())

    async def disconnect(self, code: int) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def run_events(self, message: dict[str, Any]) -> None:
        async with self._lock:
            fresh = [event for event in message["events"] if event["seq"] > self.last_seq]
            if not fresh:
                return
            if fresh[0]["seq"] != self.last_seq + 1:
                # An earlier batch is late or lost; it is committed, so read it.
                await self._catch_up()
                return
            await self._send_events(fresh)

    async def run_samples(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "samples", "samples": message["samples"]})

    async def _catch_up(self) -> None:
        while True:
            events = await database_sync_to_async(run_stream.events_after)(self.run_id, self.last_seq)
            if not events:
                return
            await self._send_events(events)

    async def _send_events(self, events: list[dict[str, Any]]) -> None:
        self.last_seq = events[-1]["seq"]
        await self.send_json({"type": "events", "events": events})

    async def _watch_for_missed(self) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_EVERY_S)
            if await database_sync_to_async(run_stream.last_seq)(self.run_id) > self.last_seq:
                async with self._lock:
                    await self._catch_up()


class MonitorConsumer(_ReadOnlyConsumer):
    """The resource monitor: workers with their host load and NPUs, then live worker
    heartbeats and NPU resource samples."""

    async def connect(self) -> None:
        self.joined = False
        if not await self.allowed():
            return
        self.joined = True
        await self.channel_layer.group_add(MONITOR_GROUP, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(resource_monitor.snapshot)())

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(MONITOR_GROUP, self.channel_name)

    async def monitor_worker(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "worker", "worker": message["worker"]})

    async def monitor_samples(self, message: dict[str, Any]) -> None:
        await self.send_json({"type": "samples", "samples": message["samples"]})


class NoSuchStream(AsyncJsonWebsocketConsumer):
    """Any other path under the WebSocket router: closed with 4404, not a routing error."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)


def _after(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("ascii", "replace")).get("after")
    if not values:
        return None
    try:
        return max(0, int(values[0]))
    except ValueError:
        return None
