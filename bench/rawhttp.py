"""A cheap load generator's HTTP/1.1: one keep-alive connection, requests built as bytes.

httpx spends several milliseconds of CPU per tip on the same two cores as the relay
it measures; this client does only what a tip needs: a GET of the form with a pre-built
request, the form token scraped from the page, a POST of the form (URL-encoded, or
multipart as a browser sends the page's form), the answer read by its Content-Length
and, for a 200, the receipt code looked for in the page so a refusal is never counted
as a tip.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.parse
import zlib
from dataclasses import dataclass

TOKEN = re.compile(rb'name=t value="([^"]+)"')
CATEGORY = re.compile(rb'name=category value="([^"]+)"')
# The receipt page's code: 16 digits in four groups (format_receipt).
RECEIPT = re.compile(rb'<p class=code>\d{4}[ \xc2\xa0-]*\d{4}[ \xc2\xa0-]*\d{4}[ \xc2\xa0-]*\d{4}<')
BOUNDARY = "mbbench0boundary"


class ProtocolError(RuntimeError):
    """The relay's answer was not the HTTP this client reads (or the connection closed)."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes  # decompressed


class TipClient:
    """One keep-alive connection to the relay, sending tips to one form path."""

    def __init__(self, host: str, port: int, path: str, *, multipart: bool = False) -> None:
        self.host, self.port, self.path = host, port, path
        self.multipart = multipart
        self._get = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Accept-Encoding: gzip\r\n\r\n").encode("ascii")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError):  # the relay may have reset it
                await writer.wait_closed()

    async def _exchange(self, request: bytes) -> Answer:
        reused = self._writer is not None and not self._writer.is_closing()
        reader, writer = await self._connection()
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.close()
            # A keep-alive connection the relay closed while idle (after 5 s) took no
            # request: sent again on a new one, as httpx does. Otherwise it counts.
            nothing = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
            if reused and nothing:
                return await self._exchange(request)
            raise ProtocolError("the relay closed the connection") from exc
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, gzipped, closing = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"content-encoding":
                gzipped = value.strip() == b"gzip"
            elif name == b"connection":
                closing = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                raise ProtocolError("chunked answers are not read by this client")
        body = await reader.readexactly(length) if length else b""
        if closing:
            await self.close()
        return Answer(status, zlib.decompress(body, 16 + zlib.MAX_WBITS) if gzipped else body)

    async def form(self) -> Answer:
        return await self._exchange(self._get)

    def post_request(self, page: bytes, text: str) -> bytes:
        """The POST a browser would send for *page*: its token, its first category."""
        token, category = TOKEN.search(page), CATEGORY.search(page)
        if token is None or category is None:
            raise ProtocolError("the form page has no token or no category")
        fields = {"t": token.group(1).decode("ascii"), "lang": "vi",
                  "category": category.group(1).decode("ascii"), "text": text, "where": ""}
        if self.multipart:
            body = "".join(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'
                           f"{v}\r\n" for k, v in fields.items()).encode("utf-8")
            body += f"--{BOUNDARY}--\r\n".encode("ascii")
            kind = f"multipart/form-data; boundary={BOUNDARY}"
        else:
            body = urllib.parse.urlencode(fields).encode("ascii")
            kind = "application/x-www-form-urlencoded"
        return (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Accept-Encoding: gzip\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode("ascii") + body

    async def post(self, request: bytes) -> Answer:
        return await self._exchange(request)


def is_receipt(answer: Answer) -> bool:
    """A 200 that shows a receipt code: the tip was acknowledged."""
    return answer.status == 200 and RECEIPT.search(answer.body) is not None


def split_url(base: str) -> tuple[str, int]:
    """(host, port) of ``http://HOST:PORT``."""
    parts = urllib.parse.urlsplit(base)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"{base}: expected http://HOST:PORT")
    return parts.hostname, parts.port
