"""WebSocket consumer of one run: /ws/runs/<id>/[?after=SEQ]."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from control_unit.models import Run
from trace_monitor import run_stream
from web_ui.roles import VIEWER, has_role

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404


class RunConsumer(AsyncJsonWebsocketConsumer):
    """Authenticates in connect, joins the run's group, sends a snapshot (or what a
    reconnecting client missed), then forwards events in sequence order."""

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.run_id = str(self.scope["url_route"]["kwargs"]["run_id"])
        self.last_seq = 0
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        if not await database_sync_to_async(has_role)(user, VIEWER):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if not await database_sync_to_async(Run.objects.filter(id=self.run_id).exists)():
            await self.close(code=CLOSE_NOT_FOUND)
            return
        # Join before reading, so nothing committed in between is missed; the
        # sequence numbers drop what arrives twice.
        await self.channel_layer.group_add(run_stream.group_name(self.run_id), self.channel_name)
        await self.accept()
        after = _after(self.scope.get("query_string", b""))
        if after is None:
            snapshot = await database_sync_to_async(run_stream.snapshot)(self.run_id)
            self.last_seq = snapshot["seq"]
            await self.send_json(snapshot)
        else:
            self.last_seq = after
            await self.run_events(
                {"events": await database_sync_to_async(run_stream.events_after)(self.run_id, after)}
            )

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(run_stream.group_name(self.run_id), self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        # The stream is one-way; control goes through the API, where roles and CSRF apply.
        await self.send_json({"type": "error", "message": "this stream is read-only"})

    async def run_events(self, message: dict[str, Any]) -> None:
        for event in message["events"]:
            if event["seq"] > self.last_seq:
                self.last_seq = event["seq"]
                await self.send_json(event)


def _after(query_string: bytes) -> int | None:
    values = parse_qs(query_string.decode("ascii", "replace")).get("after")
    if not values:
        return None
    try:
        return max(0, int(values[0]))
    except ValueError:
        return None
