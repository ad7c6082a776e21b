"""Demo mode's stand-ins for the outside world: an SMS gateway and an SMTP server that accept everything.

``make run`` has no real gateway or mail server, so without these every answer and notice of
the demo would wait for a person.  Both run in the dev run's own event loop on the loopback
interface, speak what feedback's sender speaks (``services/feedback/sending.py``: a JSON POST
with an ``Idempotency-Key``; plain SMTP), print one masked line per message, keep nothing but
a bounded list of the keys already seen, and stop with the rest of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from shared.masking import mask_address

SMS_PATH = "/sms"
DEMO_SENDER = "dczd@demo.example.cn"
MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
READ_TIMEOUT_SECONDS = 10.0
REMEMBERED_KEYS = 1000
SHOWN_TEXT = 60

Say = Callable[[str, str], None]


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_TEXT else flat[:SHOWN_TEXT] + "…"


@dataclass
class SmsSink:
    """POST /sms {"to", "text", "reference"} with an Idempotency-Key: 200, a repeated key sent once."""

    say: Say
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    accepted: int = 0

    def accept(self, body: dict[str, Any], key: str | None) -> tuple[int, dict[str, Any]]:
        to, text = body.get("to"), body.get("text")
        if not isinstance(to, str) or not isinstance(text, str) or not to or not text:
            return 400, {"error": "to and text are required"}
        if not key:
            return 400, {"error": "Idempotency-Key required"}
        if key in self.seen:
            return 200, {"id": key, "duplicate": True}
        self.seen[key] = None
        while len(self.seen) > REMEMBERED_KEYS:
            self.seen.popitem(last=False)
        self.accepted += 1
        self.say(f"短信 → {mask_address(to)}：{_short(text)}", "sms")
        return 200, {"id": key}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection (``Connection: close``); a malformed or slow one gets 400."""
        status, answer = 400, {"error": "bad request"}
        try:
            method, path, headers, body = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_SECONDS)
            if method != "POST" or path.split("?", 1)[0] != SMS_PATH:
                status, answer = 404, {"error": "not found"}
            else:
                status, answer = self.accept(json.loads(body or b"{}"), headers.get("idempotency-key"))
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
            pass
        payload = json.dumps(answer).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + payload)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
    request_line = (await reader.readline()).decode("latin-1").strip()
    parts = request_line.split()
    if len(parts) != 3:
        raise ValueError("not an HTTP request")
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADER_LINES):
        line = (await reader.readline()).decode("latin-1").strip()
        if not line:
            break
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    else:
        raise ValueError("too many headers")
    length = int(headers.get("content-length", "0"))
    if length < 0 or length > MAX_BODY_BYTES:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return parts[0].upper(), parts[1], headers, body


@dataclass
class MailSink:
    """aiosmtpd's handler: every message accepted, one masked line per recipient."""

    say: Say
    accepted: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        subject = ""
        content = envelope.content if isinstance(envelope.content, bytes) else b""
        match = re.search(rb"^Subject: (.*)$", content, flags=re.MULTILINE | re.IGNORECASE)
        if match:
            subject = str(make_header(decode_header(match.group(1).decode("ascii", "replace").strip())))
        for recipient in envelope.rcpt_tos:
            self.accepted += 1
            self.say(f"邮件 → {mask_address(recipient)}：{_short(subject)}", "smtp")
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class DemoSinks:
    sms: SmsSink
    mail: MailSink
    sms_url: str
    smtp_host: str
    smtp_port: int

    def environment(self) -> dict[str, str]:
        """Feedback's settings pointing at the sinks."""
        return {
            "SMS_GATEWAY_URL": self.sms_url,
            "SMTP_HOST": self.smtp_host,
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_FROM": DEMO_SENDER,
            "SMTP_STARTTLS": "false",
            "SMTP_SSL": "false",
        }

    def banner_lines(self) -> list[str]:
        return [
            f"  演示短信网关 / demo SMS gateway: {self.sms_url}",
            f"  演示邮件服务器 / demo SMTP sink: {self.smtp_host}:{self.smtp_port}",
        ]


def _port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


@contextlib.asynccontextmanager
async def running_sinks(
    say: Say, *, host: str = "127.0.0.1", sms_port: int = 0, smtp_port: int = 0
) -> AsyncIterator[DemoSinks]:
    """Both sinks listening on ``host`` (port 0: any free port) until the block ends."""
    sms, mail = SmsSink(say), MailSink(say)
    loop = asyncio.get_running_loop()
    sms_server = await asyncio.start_server(sms.handle, host, sms_port)
    try:
        smtp_server = await loop.create_server(lambda: SMTP(mail, hostname="demo-smtp"), host, smtp_port)
        try:
            yield DemoSinks(
                sms=sms,
                mail=mail,
                sms_url=f"http://{host}:{_port(sms_server)}{SMS_PATH}",
                smtp_host=host,
                smtp_port=_port(smtp_server),
            )
        finally:
            smtp_server.close()
            await _closed(smtp_server)
    finally:
        sms_server.close()
        await _closed(sms_server)


async def _closed(server: asyncio.Server) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 2.0)


def point_feedback_at(sinks: DemoSinks, env: MutableMapping[str, str], say: Say) -> bool:
    """Set feedback's SMS and SMTP settings to the sinks, unless a real gateway or server is configured."""
    if env.get("SMS_GATEWAY_URL") or env.get("SMTP_HOST"):
        say("SMS_GATEWAY_URL or SMTP_HOST is set: the demo sinks are not used", "dev")
        return False
    env.update(sinks.environment())
    return True
