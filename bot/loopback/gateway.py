"""The gateway websocket of the loopback Discord stand-in.

Speaks enough of the Discord gateway for discord.py's ``DiscordWebSocket``:
HELLO, IDENTIFY → READY + GUILD_CREATE per guild, heartbeats and their ACKs,
RESUME → replay + RESUMED, REQUEST_GUILD_MEMBERS → GUILD_MEMBERS_CHUNK, and
server-side dispatches (e.g. INTERACTION_CREATE).  Frames are plain JSON text
(discord.py accepts them although it asks for ``compress=zlib-stream``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import LoopbackDiscord

log = logging.getLogger(__name__)

MESSAGE_CONTENT_INTENT = 1 << 15
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, REQUEST_MEMBERS = 0, 1, 2, 6, 7, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11


@dataclass
class Session:
    """A gateway session: its sequence counter and the events sent in it (for RESUME)."""

    id: str
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    heartbeats: int = 0
    resumes: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Gateway:
    """Gateway state shared by all connections to one stand-in."""

    def __init__(self, server: LoopbackDiscord, heartbeat_interval_ms: int = 41250) -> None:
        self.server = server
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.identify_payloads: list[dict[str, Any]] = []
        self._sockets: set[web.WebSocketResponse] = set()

    @property
    def heartbeats(self) -> int:
        """Heartbeats received over all sessions."""
        return sum(s.heartbeats for s in self.sessions.values())

    @property
    def message_content_intent(self) -> bool:
        """Whether the client identified with the privileged MESSAGE_CONTENT intent."""
        if not self.identify_payloads:
            return False
        return bool(int(self.identify_payloads[-1].get("intents") or 0) & MESSAGE_CONTENT_INTENT)

    def live_sessions(self) -> list[Session]:
        """Sessions with an open websocket."""
        return [s for s in self.sessions.values() if s.ws is not None and not s.ws.closed]

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send a DISPATCH to every live session; return how many received it."""
        sent = 0
        for session in self.live_sessions():
            await self._send_event(session, event, data)
            sent += 1
        return sent

    async def _send_event(self, session: Session, event: str, data: dict[str, Any]) -> None:
        """Send one DISPATCH; the lock keeps sequence numbers in sending order under concurrency."""
        async with session.lock:
            session.seq += 1
            frame = {"op": DISPATCH, "s": session.seq, "t": event, "d": data}
            session.events.append(frame)
            if session.ws is not None and not session.ws.closed:
                await session.ws.send_str(json.dumps(frame))

    async def request_reconnect(self) -> int:
        """Send op 7 RECONNECT to every live session (the client should RESUME)."""
        sessions = self.live_sessions()
        for session in sessions:
            assert session.ws is not None
            await session.ws.send_str(json.dumps({"op": RECONNECT, "d": None}))
        return len(sessions)

    async def close_all(self) -> None:
        """Close every open websocket (server shutdown)."""
        for ws in list(self._sockets):
            await ws.close()

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The aiohttp handler of ``/gateway``."""
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: Session | None = None
        try:
            await ws.send_str(
                json.dumps({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    if msg.type == WSMsgType.ERROR:
                        break
                    continue
                frame = json.loads(msg.data)
                session = await self._on_frame(ws, session, frame)
        finally:
            self._sockets.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, session: Session | None, frame: dict[str, Any]
    ) -> Session | None:
        op = frame.get("op")
        data = frame.get("d")
        if op == HEARTBEAT:
            if session is not None:
                session.heartbeats += 1
            await ws.send_str(json.dumps({"op": HEARTBEAT_ACK}))
        elif op == IDENTIFY:
            self.identify_payloads.append(data)
            session = Session(id=secrets.token_hex(16), ws=ws)
            self.sessions[session.id] = session
            await self._send_event(session, "READY", self.server.ready_payload(session.id))
            for guild in self.server.guilds.values():
                await self._send_event(session, "GUILD_CREATE", guild.payload())
        elif op == RESUME:
            known = self.sessions.get(str(data.get("session_id")))
            if known is None:
                await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))
                return session
            known.ws = ws
            known.resumes += 1
            after = int(data.get("seq") or 0)
            for event in known.events:
                if event["s"] > after:
                    await ws.send_str(json.dumps(event))
            await self._send_event(known, "RESUMED", {})
            session = known
        elif op == REQUEST_MEMBERS and session is not None:
            guild = self.server.guilds.get(int(data["guild_id"]))
            if guild is not None:
                chunk = {
                    "guild_id": str(guild.id),
                    "members": [m.payload() for m in guild.members.values()],
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "not_found": [],
                }
                if data.get("nonce"):
                    chunk["nonce"] = data["nonce"]
                await self._send_event(session, "GUILD_MEMBERS_CHUNK", chunk)
        else:
            log.info("loopback gateway: ignoring op %s", op)
        return session
