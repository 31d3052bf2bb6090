"""The public web form: Starlette + Jinja2, server-rendered, no JavaScript needed.

What a seized phone can show is kept to "the form was opened": the tip text
and the receipt code travel only in POST bodies and responses, never in a URL;
every page is ``Cache-Control: no-store``; no cookie is ever set; no third-party
resource is loaded (a strict CSP allows only the one inline stylesheet).

``/status`` opens a tip's conversation with its receipt code (a POST body, never
a URL), checked by its Damm digit before any lookup and rate-limited per network
and in total; what the tipster adds there is forwarded as a follow-up under the tip.

A tip is acknowledged only after ``RelayStore.accept`` committed it. Anything
that fails before then shows "not sent, please try again" (HTTP 503) with the
tipster's text still in the form, and nothing is half-sent.

Cross-site forgery is stopped without cookies: each form carries a short-lived
signed token (HMAC, coarse issue time) that is accepted once.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import hashlib
import hmac
import logging
import multiprocessing
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from babel.dates import format_date
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Match, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Category, Placement, Settings, Station, catalog_languages
from ..core.conversation import Sealer, seal
from ..core.message import (
    MAX_WHERE,
    NEAR_DUPLICATE,
    Attachment,
    Composed,
    ContractError,
    Envelope,
    Submission,
    compose,
    hour_of,
    signing_key,
)
from ..core.receipts import (
    ReceiptHasher,
    derive_key,
    format_receipt,
    new_receipt_code,
    new_reply_token,
    parse_receipt,
)
from ..core.shingles import NearDuplicates
from ..core.text import clean_text, is_slug
from ..errors import FormTokenUsed, MailbridgeError, MediaRefused, StationFull, StoreError
from ..labels import category_label
from ..openpgp import encryptor_for
from .i18n import (
    MESSAGE_LANGUAGE,
    N_,
    babel_locale,
    environment,
    format_number,
    gettext_for,
    html_lang,
    language_name,
)
from .media import MediaCleaner, MediaLimits
from .prompts import CACHE, Prompts
from .ratelimit import RateLimiter, seconds_to_next_hour
from .store import TIPSTER, Accepted, Conversation, RelayStore
from .uploads import (
    MULTIPART_TYPE,
    BodyTooLarge,
    BodyUnreadable,
    RelayBusy,
    UploadBudget,
    Uploads,
    read_multipart,
    refusal_text,
    too_large_text,
    too_many_text,
)

log = logging.getLogger(__name__)

CSS = "".join(line.strip() for line in
              (Path(__file__).parent / "static" / "form.css").read_text("utf-8").splitlines())


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


# Progressive enhancement only: each ``static/NAME.js`` is inlined by ``script(NAME)``
# in a template and allowed by its hash, so the page still loads nothing else.
SCRIPTS: Mapping[str, str] = {
    path.stem: path.read_text("utf-8").strip()
    for path in sorted((Path(__file__).parent / "static").glob("*.js"))}
_SCRIPT_SRC = "".join(f" 'sha256-{_sha256(text)}'" for text in SCRIPTS.values())
_CSS_HASH = _sha256(CSS)
CSP = (f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; "
       + (f"script-src{_SCRIPT_SRC}; connect-src 'self'; " if SCRIPTS else "")
       + "media-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def inline_script(name: str) -> Markup:
    """``<script>`` with the text of ``static/NAME.js``, the one the CSP allows by hash."""
    return Markup(f"<script>{SCRIPTS[name]}</script>")  # noqa: S704


SECURITY_HEADERS: Mapping[str, str] = {
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
# A busy relay's Retry-After: long enough for the tips ahead to be answered.
BUSY_RETRY_SECONDS = 10
FORM_FIELDS = frozenset({"t", "lang", "category", "text", "where"})
STATUS_FIELDS = frozenset({"t", "lang", "code", "text"})
FORM_TYPE = "application/x-www-form-urlencoded"


class FormTokens:
    """Signed, short-lived form tokens, each accepted once (replays refused while valid).

    A token is ``period.nonce.mac``: the period is the issue time in coarse
    steps (10 minutes), so nothing finer is ever held. A used token is handed
    to ``remember`` (``RelayStore.use_form_token``; a tip's goes into its own
    transaction through ``used``) as an HMAC of the token with the moment it
    stops being valid; kept in the database, it stays used across a restart.
    ``remember`` answers False for a token seen before.
    """

    def __init__(self, key: bytes, remember: Callable[[str, datetime], bool], *,
                 lifetime: int = 7200, step: int = 600,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._remember = remember
        self._periods = lifetime // step
        self._step = step
        self._clock = clock

    def _period(self) -> int:
        return int(self._clock() // self._step)

    def _mac(self, period: int, nonce: str, station_id: str) -> str:
        digest = hmac.new(self._key, f"{period}.{nonce}.{station_id}".encode(),
                          hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode("ascii")

    def issue(self, station_id: str) -> str:
        period, nonce = self._period(), secrets.token_urlsafe(12)
        return f"{period}.{nonce}.{self._mac(period, nonce, station_id)}"

    def genuine(self, token: str, station_id: str) -> bool:
        """True for a token this relay issued for this station that has not expired
        (used or not). Pure: nothing is written."""
        return self._period_of(token, station_id) is not None

    def _period_of(self, token: str, station_id: str) -> int | None:
        period_text, _, rest = token.partition(".")
        nonce, _, mac = rest.partition(".")
        if not (period_text.isascii() and period_text.isdigit() and len(period_text) < 12):
            return None
        period, now = int(period_text), self._period()
        if not 0 <= now - period <= self._periods:
            return None
        if not hmac.compare_digest(mac, self._mac(period, nonce, station_id)):
            return None
        return period

    def consume(self, token: str, station_id: str) -> bool:
        """True once for a genuine, unexpired token of this station; then False.
        Blocking: ``remember`` writes to the database."""
        used = self.used(token, station_id)
        return used is not None and self._remember(*used)

    def used(self, token: str, station_id: str) -> tuple[str, datetime] | None:
        """What ``remember`` keeps of a genuine, unexpired token (the HMAC of it, the
        moment it stops being valid), to be written with the tip's ref
        (``RelayStore.accept``); None for any other token. Pure."""
        period = self._period_of(token, station_id)
        if period is None:
            return None
        digest = hmac.new(self._key, f"used.{token}".encode(), hashlib.sha256).hexdigest()
        return digest, datetime.fromtimestamp((period + self._periods + 1) * self._step, UTC)


@dataclass(frozen=True)
class FormInput:
    """What the tipster typed, already cleaned (NFC, no controls or escapes), and the
    files they chose, once cleaned (``media.py``)."""

    category: str = ""
    text: str = ""
    where: str = ""
    files: tuple[Attachment, ...] = ()
    likely_spam: str = ""  # NEAR_DUPLICATE: many recent tips carry the same text


class _Refused(Exception):
    """The request body cannot be read as our form; *status* says why."""

    def __init__(self, status: int, *, files: bool = False) -> None:
        super().__init__(status)
        self.status = status
        self.files = files  # a body with files: too large is the files, not the text


class SecurityHeaders:
    """ASGI middleware: the same protective headers on every response, no cookies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # An audio prompt's own long cache is kept: its URL is its content's hash.
        own = {"cache-control"} if scope["path"].startswith("/audio/") else set()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                given = message.get("headers", [])
                names = [k.decode("latin-1").lower() for k, _ in given]
                kept = own & set(names)
                headers = [(k, v) for (k, v), name in zip(given, names, strict=True)
                           if name != "set-cookie"
                           and (name in kept or name not in SECURITY_HEADERS)]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                            if k not in kept]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class InFlight:
    """Form tips between their body and their answer, at most ``relay.tips_in_flight``
    for all web workers together.

    A tipster's wait grows with the work queued ahead, so N workers must not queue N
    times what one would; and a share per worker would refuse tipsters at one worker
    while another has room (the kernel hands out connections unevenly). So the count is
    a ``multiprocessing.Value`` in shared memory, made before the workers are forked
    (``server.run_workers``), or here for a relay of one process.
    """

    def __init__(self, bound: int, shared: Synchronized[int] | None = None) -> None:
        self.bound = bound
        self._count = shared if shared is not None else multiprocessing.Value(ctypes.c_int, 0)

    def enter(self) -> bool:
        """Take a place; False past the bound (then nothing was taken)."""
        with self._count.get_lock():
            if self._count.value >= self.bound:
                return False
            self._count.value += 1
            return True

    def leave(self) -> None:
        with self._count.get_lock():
            self._count.value -= 1


class WebForm:
    """The routes' state: settings, store, keys, limiter and templates."""

    def __init__(self, settings: Settings, store: RelayStore,
                 on_accepted: Callable[[], None],
                 in_flight: Synchronized[int] | None = None) -> None:
        self.settings = settings
        self.relay = settings.relay
        self.store = store
        self.on_accepted = on_accepted
        secret = settings.relay.secret.reveal()
        self.tokens = FormTokens(derive_key(secret, "form"), store.use_form_token)
        self.limiter = RateLimiter(derive_key(secret, "ratelimit"),
                                   settings.relay.rate_limit_per_hour,
                                   trusted_proxies=settings.relay.trusted_proxies)
        # Shingles of recent tips, in memory only, under a key that is never written.
        self.duplicates = NearDuplicates(secrets.token_bytes(16))
        self.hasher = ReceiptHasher(derive_key(secret, "receipt"))
        self.sealer = Sealer(derive_key(secret, "conversation"))
        # Guessing codes: a per-network limit, and one for all networks together
        # (a guesser spreads over many networks; docs/THREAT-MODEL.md has the figures).
        self.lookups = RateLimiter(derive_key(secret, "ratelimit-code"),
                                   settings.relay.status_lookups_per_hour,
                                   total_per_hour=settings.relay.status_lookups_total_per_hour,
                                   trusted_proxies=settings.relay.trusted_proxies)
        self.signer = signing_key(secret)
        for station in settings.stations.values():  # each key imported (and checked) now
            encryptor_for(station.id, station.openpgp_key)
        self.prompts = Prompts({s.id: s.audio_prompts for s in settings.stations.values()
                                if s.audio_prompts is not None}, catalog_languages())
        # A URL-encoded UTF-8 character takes at most 9 bytes (%XX%XX%XX).
        self.max_body = (self.relay.max_text_chars + MAX_WHERE) * 9 + 4096
        self.media = MediaLimits(max_photos=self.relay.max_photos,
                                 photo_max_px=self.relay.photo_max_px,
                                 voice_max_seconds=self.relay.voice_max_seconds)
        self.cleaner = MediaCleaner(self.media)
        # Uploads being received, all requests together: two of the largest at once.
        self.upload_budget = UploadBudget(2 * self.media.max_upload_bytes)
        self.in_flight = InFlight(self.relay.tips_in_flight, in_flight)
        # Stations this worker found full, with the hour: refused at once until it ends.
        self._full: dict[str, datetime] = {}
        # Plain form pages as rendered once, a random slot where each one's token goes.
        self._token_slot = secrets.token_hex(16)
        self._pages: dict[tuple[str, str, str, bool], str] = {}

    # -- rendering ------------------------------------------------------------------

    def language(self, requested: str | None, placement: Placement | None = None) -> str:
        """The URL's ``lang``, else the poster's own (a Hmong market's opens in Hmong), else
        the relay's default. Never a cookie: the choice travels in links and forms."""
        if requested in self.relay.languages:
            return str(requested)
        if placement is not None and placement.language in self.relay.languages:
            return placement.language
        return self.relay.default_language

    def link(self, path: str, lang: str, placement: Placement | None = None) -> str:
        """*path* with ``?lang=`` unless *lang* is the one the page opens in by itself."""
        return path if lang == self.language(None, placement) else _lang_query(path, lang)

    def render(self, lang: str, template: str, status: int = 200, *,
               switch: bool = False, here: str = "", **context: Any) -> HTMLResponse:
        """*here*: the path the switch's links open (by default the page's own)."""
        page = environment(lang).get_template(template).render(
            lang=lang, html_lang=html_lang(lang), css=Markup(CSS),  # noqa: S704
            script=inline_script, max_photos=self.relay.max_photos,
            photo_max_px=self.relay.photo_max_px,
            voice=self.relay.voice_max_seconds > 0,
            switch=[(code, language_name(code), html_lang(code)) for code in self.relay.languages]
            if switch and len(self.relay.languages) > 1 else None, here=here,
            **context)
        return HTMLResponse(page, status_code=status)

    def message(self, lang: str, status: int, title: str, text: str) -> HTMLResponse:
        _ = gettext_for(lang)
        home = "/" if lang == self.relay.default_language else f"/?lang={lang}"
        return self.render(lang, "message.html", status, switch=True, title=_(title),
                           text=_(text), link=home)

    def form(self, lang: str, station: Station, placement: Placement | None, *,
             status: int = 200, error: str = "", form: FormInput | None = None,
             switch: bool = False) -> HTMLResponse:
        token = self.tokens.issue(station.id)
        if status != 200 or error or form is not None:
            return self._form_page(lang, station, placement, token, status=status,
                                   error=error, form=form, switch=switch)
        # The empty form differs between tipsters by its token only: rendered once per
        # language, poster and switch, the fresh token put in its slot (the render cost
        # about 1 ms of CPU a GET: docs/PERFORMANCE.md, bench_stages).
        key = (lang, station.id, placement.id if placement else "", switch)
        page = self._pages.get(key)
        if page is None:
            page = self._pages[key] = bytes(self._form_page(
                lang, station, placement, self._token_slot, switch=switch).body).decode("utf-8")
        return HTMLResponse(page.replace(self._token_slot, token))

    def _form_page(self, lang: str, station: Station, placement: Placement | None, token: str,
                   *, status: int = 200, error: str = "", form: FormInput | None = None,
                   switch: bool = False) -> HTMLResponse:
        categories = [{"id": c.id, "pictogram": c.pictogram, "label": category_label(c, lang)}
                      for c in station.categories]
        return self.render(
            lang, "form.html", status, switch=switch, station=station, placement=placement,
            action=_form_path(station, placement), token=token,
            categories=categories, form=form or FormInput(), error=error,
            max_text=self.relay.max_text_chars, max_where=MAX_WHERE,
            prompts=self.prompts.urls(station.id, lang))

    # -- routes ---------------------------------------------------------------------

    async def chooser(self, request: Request) -> Response:
        lang = self.language(request.query_params.get("lang"))
        query = "" if lang == self.relay.default_language else f"?lang={lang}"
        stations = sorted(self.settings.stations.values(), key=lambda s: s.name)
        return self.render(lang, "chooser.html", switch=True, stations=stations, query=query)

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def audio(self, request: Request) -> Response:
        """A station's recorded instructions, cached for a year (the name is its hash)."""
        prompt = self.prompts.get(str(request.path_params["station"]),
                                  str(request.path_params["name"]))
        if prompt is None:
            raise HTTPException(404)
        return Response(prompt.data, media_type=prompt.media_type,
                        headers={"cache-control": CACHE})

    async def no_icon(self, request: Request) -> Response:
        return Response(status_code=204)

    async def station_form(self, request: Request) -> Response:
        station, placement = self._resolve(request.path_params)
        if request.method in ("GET", "HEAD"):  # HEAD: the same headers, no body, no body read
            lang = self.language(request.query_params.get("lang"), placement)
            return self.form(lang, station, placement, switch=True)
        return await self.submit(request, station, placement)

    def _resolve(self, params: Mapping[str, Any]) -> tuple[Station, Placement | None]:
        station_id = str(params["station"]).lower()
        station = self.settings.station(station_id) if is_slug(station_id) else None
        if station is None:
            raise HTTPException(404)
        if "placement" not in params:
            return station, None
        placement = station.placement(str(params["placement"]).lower())
        if placement is None:
            raise HTTPException(404)
        return station, placement

    async def submit(self, request: Request, station: Station,
                     placement: Placement | None) -> Response:
        try:
            fields, uploads = await self._read_form(request)
        except ClientDisconnect:  # nobody is left to answer; nothing about them is logged
            log.info("a client went away before its form arrived")
            return Response(status_code=400)
        except _Refused as refused:
            lang = self.language(request.query_params.get("lang"))
            if refused.status == 413 and refused.files:  # the form again, to write anew
                return self.form(lang, station, placement, status=413,
                                 error=too_large_text(lang, self.media.max_upload_bytes))
            if refused.status == 413:
                return self.message(lang, 413, N_("Too long"),
                                    N_("Your message is too long to be sent. Please shorten "
                                       "it and try again."))
            if refused.status == 503:
                return self.message(lang, 503, N_("Something went wrong"),
                                    N_("Nothing was sent. Please try again in a few minutes."))
            return self.message(lang, refused.status, N_("The form could not be read"),
                                N_("Please go back, open the form again and send it again."))
        lang = self.language(fields.get("lang"))
        _ = gettext_for(lang)
        form = FormInput(category=fields.get("category", ""),
                         text=clean_text(fields.get("text", "")),
                         where=clean_text(fields.get("where", ""), max_length=MAX_WHERE))

        def again(status: int, error: str) -> Response:
            return self.form(lang, station, placement, status=status, error=error, form=form)

        def not_sent(exc: Exception) -> Response:
            log.error("a tip for station %s was not accepted: %s", station.id, _describe(exc))
            return again(503, _("Your tip was NOT sent. Please try again in a few minutes."))

        hour = hour_of(self.store.clock())

        def station_full() -> Response:
            self._full[station.id] = hour
            busy = again(503, _("This station has received too many tips in the last hour. "
                                "Your tip was NOT sent. Please try again later."))
            busy.headers["Retry-After"] = str(seconds_to_next_hour())
            return busy

        # Past the bound the answer comes at once, the text kept: never a queue of
        # seconds behind other tips (the body is in, so a slow uplink holds no slot).
        if not self.in_flight.enter():
            busy = again(503, _("Too many people are sending tips right now. Your tip was "
                                "NOT sent. Please try again in a minute."))
            busy.headers["Retry-After"] = str(BUSY_RETRY_SECONDS)
            return busy
        try:
            expired = _("This form has expired or was already sent. If you saw a receipt code, "
                        "your tip has arrived. If not, send it again.")
            token = fields.get("t", "")
            if not self.tokens.genuine(token, station.id):
                return again(400, expired)
            category = station.category(form.category) if form.category else None
            if category is None:
                return again(400, _("Please choose what it is about."))
            if not form.text and not uploads:
                return again(400, _("Please write what you saw."))
            if len(form.text) > self.relay.max_text_chars:
                return again(400, _("The text is too long: at most %(max)s characters.")
                             % {"max": format_number(self.relay.max_text_chars, lang)})
            # Nothing is written before the tip's accept (which records the used
            # token): a refused form, or a network over its limit, leaves no used token.
            if not self.limiter.hit(request.scope):
                return again(429, _("Too many tips were sent from your network in the last "
                                    "hour. Please try again later."))
            # The count is taken in accept()'s first transaction, exact across every worker
            # and relay sharing the database. Once it refused this station, this worker
            # refuses at once until the hour ends: a flood past the limit costs one receipt
            # hash a worker, not one a tip, and an accepted tip no read of the count.
            if self._full.get(station.id) == hour:
                return station_full()
            files, problem = await self._clean(lang, uploads)
            if problem:  # the form again, the text kept, the token unused
                return again(400, problem)
            # The token is recorded as used in accept()'s first transaction, with the
            # tip's ref, and given back if the tip is not stored; a token used before is
            # refused there, nothing stored.
            used = self.tokens.used(token, station.id)
            if used is None:  # expired since the check above
                return again(400, expired)
            try:
                code = new_receipt_code()
                sighting = self.duplicates.look(station.id, form.text)
                form = dataclasses.replace(form, files=files,
                                           likely_spam=NEAR_DUPLICATE if sighting.copied else "")
                accepted = await run_in_threadpool(
                    self._accept, station, placement, category, form, code, used)
            except FormTokenUsed:  # a double-tap or a replay: the first one was the tip
                return again(400, expired)
            except StationFull:  # the hour filled up since the read above; nothing was stored
                return station_full()
            except ContractError:  # by construction never; if it happens, nothing was stored
                log.error("a tip for station %s was refused: its message did not check out",
                          station.id)
                return again(422, _("Your tip was NOT sent: some characters in it cannot be sent "
                                    "safely. Please change the text and send it again."))
            except Exception as exc:  # the tipster must learn it was not sent, whatever failed
                return not_sent(exc)
            self.duplicates.remember(sighting)  # stored tips only: a refused copy never counts
            try:
                self.on_accepted()
            except Exception as exc:  # committed already: delivery will pick it up anyway
                log.error("waking the delivery worker failed: %s", _describe(exc))
            # DEBUG only: the journal's timestamp would pin the minute of the submission,
            # finer than the hour the design allows (and defeating delivery_delay_minutes).
            log.debug("accepted tip %s for station %s", accepted.ref, station.id)
            return self.render(lang, "receipt.html", station=station, ref=accepted.ref,
                               code=format_receipt(code), action=_form_path(station, placement),
                               again=self.link(_form_path(station, placement), lang, placement),
                               status_link=_lang_query("/status", lang))
        finally:
            self.in_flight.leave()

    async def _clean(self, lang: str, uploads: Uploads) -> tuple[tuple[Attachment, ...], str]:
        """The chosen files cleaned, or the refusal to show with the text kept."""
        if len(uploads.photos) > self.relay.max_photos:
            return (), too_many_text(lang, self.relay.max_photos)
        try:
            return await self.cleaner.clean(uploads.photos, uploads.voice), ""
        except MediaRefused as refused:
            return (), refusal_text(lang, refused, self.media)

    def _compose(self, station: Station, category: Category, form: FormInput, *, ref: str,
                 date: datetime, envelope: Envelope,
                 placement: Placement | None = None) -> Composed:
        """The signed message of a tip or a follow-up: the one contract for both."""
        submission = Submission(
            station_id=station.id, station_name=station.name, mailbox=station.mailbox,
            ref=ref, category_id=category.id,
            category_label=category_label(category, MESSAGE_LANGUAGE),
            text=form.text, placement_id=placement.id if placement else "",
            placement_label=placement.label if placement else "",
            where_when=form.where, received_hour=hour_of(datetime.now(UTC)),
            attachments=form.files, likely_spam=form.likely_spam)
        # Encrypted here, before the commit: the outbox holds only ciphertext.
        return compose(submission, envelope, self.signer,
                       gettext=gettext_for(MESSAGE_LANGUAGE), now=date,
                       encrypt=encryptor_for(station.id, station.openpgp_key))

    def _accept(self, station: Station, placement: Placement | None, category: Category,
                form: FormInput, code: str, used: tuple[str, datetime]) -> Accepted:
        """Build and commit the tip with its conversation keys and its used form token
        (blocking: the slow hash + database, run in a thread)."""
        token = new_reply_token()
        envelope = Envelope(self.relay.address, self.relay.domain, token)

        def build(ref: str, date: datetime) -> Composed:
            return self._compose(station, category, form, ref=ref, date=date,
                                 envelope=envelope, placement=placement)

        derived = self.hasher.derive(code)
        return self.store.accept(station, build, receipt_hash=derived.receipt_hash,
                                 reply_token=token,
                                 delay_minutes=station.delivery_delay_minutes,
                                 keys=self.sealer.new_keys(derived.seal_key),
                                 category_id=category.id,
                                 per_hour=self.relay.station_tips_per_hour, form_token=used)

    # -- status: replies and follow-ups, opened with the receipt code ------------------

    async def status(self, request: Request) -> Response:
        """GET: the code field. POST: the conversation, or a follow-up to add to it."""
        if request.method in ("GET", "HEAD"):
            return self.status_page(self.language(request.query_params.get("lang")))
        try:
            fields, uploads = await self._read_form(request, STATUS_FIELDS)
        except ClientDisconnect:
            return Response(status_code=400)
        except _Refused as refused:
            lang = self.language(request.query_params.get("lang"))
            return self.status_page(lang, refused.status, N_("The form could not be read"))
        lang = self.language(fields.get("lang"))
        code = parse_receipt(fields.get("code", ""))
        if code is None:  # a typo is caught by the check digit: no lookup, nothing counted
            return self.status_page(lang, 400, N_("Check the code: it has 16 digits, and one "
                                                  "of them is not right."))
        if not self.lookups.hit(request.scope):
            return self.status_page(lang, 429, N_("Too many codes were tried from your network "
                                                  "or from everywhere. Please try again in an "
                                                  "hour."))
        try:
            conversation = await run_in_threadpool(self._open, code)
        except StoreError as exc:
            log.error("a receipt code could not be looked up: %s", _describe(exc))
            return self.status_page(lang, 503, N_("Something went wrong"))
        station = self.settings.station(conversation.tip.station_id) if conversation else None
        if conversation is None or station is None:
            return self.status_page(lang, 404, N_(
                "No tip has this code. Replies are kept for %(days)s days, then deleted."),
                days=format_number(self.relay.conversation_days, lang))
        if request.url.path.rstrip("/").endswith("/add"):
            return await self._add(lang, code, station, conversation, fields, uploads)
        return self.conversation(lang, code, station, conversation)

    def _open(self, code: str) -> Conversation | None:
        derived = self.hasher.derive(code)
        return self.store.open_conversation(derived.receipt_hash, derived.seal_key, self.sealer)

    async def _add(self, lang: str, code: str, station: Station, conversation: Conversation,
                   fields: Mapping[str, str], uploads: Uploads) -> Response:
        """Forward what the tipster adds as a follow-up, threaded under the tip."""
        _ = gettext_for(lang)
        text = clean_text(fields.get("text", ""))
        # A category removed from the config since the tip: labelled by its id.
        category = self.settings.category(conversation.category_id) or Category(
            conversation.category_id, conversation.category_id)

        def again(status: int, error: str) -> Response:
            return self.conversation(lang, code, station, conversation, status=status,
                                     error=error, text=text)

        if not text and not uploads:
            return again(400, _("Please write what you want to add."))
        if len(text) > self.relay.max_text_chars:
            return again(400, _("The text is too long: at most %(max)s characters.")
                         % {"max": format_number(self.relay.max_text_chars, lang)})
        files, problem = await self._clean(lang, uploads)
        if problem:
            return again(400, problem)
        envelope = Envelope(self.relay.address, self.relay.domain, conversation.reply_token,
                            references=(conversation.tip.message_id,))
        # The tipster's page shows the follow-up's text and the names of its files.
        said = "\n".join(filter(None, [text, *(f.filename for f in files)]))

        def build(date: datetime) -> Composed:
            return self._compose(station, category, FormInput(text=text, files=files),
                                 ref=conversation.tip.ref, date=date, envelope=envelope)

        try:
            if not await run_in_threadpool(self.tokens.consume, fields.get("t", ""), station.id):
                return again(400, _("This form has expired or was already sent. If your text "
                                    "is among the replies above, it was sent."))
            await run_in_threadpool(self.store.add_followup, conversation, build,
                                    seal(conversation.public_key, said),
                                    delay_minutes=station.delivery_delay_minutes)
        except Exception as exc:  # the tipster must learn it was not sent, whatever failed
            log.error("a follow-up for station %s was not accepted: %s", station.id,
                      _describe(exc))
            return again(503, _("It was NOT sent. Please try again in a few minutes."))
        try:
            self.on_accepted()
        except Exception as exc:  # committed already: delivery will pick it up anyway
            log.error("waking the delivery worker failed: %s", _describe(exc))
        opened = await run_in_threadpool(self._open, code)
        return self.conversation(lang, code, station, opened or conversation,
                                 notice=_("Sent. The station will receive it."))

    def status_page(self, lang: str, status: int = 200, error: str = "",
                    **values: str) -> HTMLResponse:
        _ = gettext_for(lang)
        # Also after a POST to /status/add: the switch opens the code field again.
        return self.render(lang, "status.html", status, switch=True, here="/status",
                           error=_(error) % values if error else "")

    def conversation(self, lang: str, code: str, station: Station, conversation: Conversation,
                     *, status: int = 200, error: str = "", notice: str = "",
                     text: str = "") -> HTMLResponse:
        said = [{"mine": s.author == TIPSTER, "text": s.text,
                 "day": format_date(s.day, format="medium", locale=babel_locale(lang))}
                for s in conversation.said]
        return self.render(lang, "conversation.html", status, station=station,
                           tip=conversation.tip, delivered=conversation.delivered, said=said,
                           code=format_receipt(code), token=self.tokens.issue(station.id),
                           error=error, notice=notice, text=text,
                           max_text=self.relay.max_text_chars)

    async def _read_form(self, request: Request, allowed: frozenset[str] = FORM_FIELDS
                         ) -> tuple[dict[str, str], Uploads]:
        """The allow-listed fields of a URL-encoded or multipart body and its files,
        refused early when too big."""
        content_type = request.headers.get("content-type", "").partition(";")[0]
        if content_type.strip().lower() == MULTIPART_TYPE:
            try:
                return await read_multipart(
                    request, allowed, max_bytes=self.max_body + self.media.max_upload_bytes,
                    max_field_bytes=self.max_body, max_files=self.relay.max_photos + 4,
                    budget=self.upload_budget)
            except BodyTooLarge:
                raise _Refused(413, files=True) from None
            except RelayBusy:
                raise _Refused(503) from None
            except BodyUnreadable:
                raise _Refused(400) from None
        if content_type.strip().lower() != FORM_TYPE:
            raise _Refused(415)
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self.max_body):
            raise _Refused(413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise _Refused(413)
        try:
            pairs = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True,
                                           encoding="utf-8", errors="strict",
                                           max_num_fields=len(allowed) + 30)
        except ValueError as exc:  # UnicodeDecodeError too: not ASCII, not UTF-8
            raise _Refused(400) from exc
        fields: dict[str, str] = {}
        for name, value in pairs:
            if name in allowed and name not in fields:
                fields[name] = value
        return fields, Uploads()

    # -- errors ---------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        lang = self.language(request.query_params.get("lang"))
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        if status == 404:
            return self.message(lang, 404, N_("Page not found"),
                                N_("This page does not exist. Check the address on the "
                                   "poster, or choose a station below."))
        if status == 405:
            return self.message(lang, 405, N_("The form could not be read"),
                                N_("Please go back, open the form again and send it again."))
        return self.server_error(lang)

    def server_error(self, lang: str) -> HTMLResponse:
        response = self.message(lang, 500, N_("Something went wrong"),
                                N_("Nothing was sent. Please try again in a few minutes."))
        response.headers.update(SECURITY_HEADERS)
        return response

    async def crash(self, request: Request, exc: Exception) -> Response:
        log.error("error on a page: %s", _describe(exc))
        return self.server_error(self.relay.default_language)


def _lang_query(path: str, lang: str) -> str:
    return f"{path}?lang={lang}"


def _form_path(station: Station, placement: Placement | None) -> str:
    return f"/s/{station.id}/{placement.id}" if placement else f"/s/{station.id}"


def _describe(exc: BaseException) -> str:
    """Our own errors say what to fix; others only their type (their text may quote a tip)."""
    return str(exc) if isinstance(exc, MailbridgeError) else type(exc).__name__


def _slash_redirect(router: Router) -> ASGIApp:
    """``/s/ncs/`` redirects to ``/s/ncs``, as a path: Starlette's own redirect names
    ``http://`` and whatever Host the client sent, so anyone could aim it elsewhere."""
    not_found = router.default

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        target = path.rstrip("/")
        if scope["type"] == "http" and target != path and target.startswith("/") \
                and not target.startswith("//"):
            trimmed = {**scope, "path": target}
            if any(route.matches(trimmed)[0] is not Match.NONE for route in router.routes):
                query = scope["query_string"].decode("latin-1")
                location = f"{target}?{query}" if query else target
                await RedirectResponse(location, status_code=307)(scope, receive, send)
                return
        await not_found(scope, receive, send)

    return app


def create_app(settings: Settings, store: RelayStore, *,
               on_accepted: Callable[[], None] = lambda: None,
               in_flight: Synchronized[int] | None = None) -> Starlette:
    """The relay's public web app: chooser, form, receipt, health check. *in_flight*:
    the tips in flight of every web worker (``InFlight``), when there are several."""
    web = WebForm(settings, store, on_accepted, in_flight)
    app = Starlette(
        routes=[
            Route("/", web.chooser, methods=["GET"]),
            Route("/healthz", web.healthz, methods=["GET"]),
            # The receipt code only ever in a POST body: GET shows the empty field.
            Route("/status", web.status, methods=["GET", "POST"]),
            Route("/status/add", web.status, methods=["POST"]),
            # Browsers ask for it on their own: answer with nothing, not a 2 KB 404 page.
            Route("/favicon.ico", web.no_icon, methods=["GET"]),
            Route("/audio/{station}/{name}", web.audio, methods=["GET"]),
            # QR codes may encode the whole URL in upper case (alphanumeric mode).
            *(Route(f"/{s}/{{station}}", web.station_form, methods=["GET", "POST"])
              for s in "sS"),
            *(Route(f"/{s}/{{station}}/{{placement}}", web.station_form,
                    methods=["GET", "POST"]) for s in "sS"),
        ],
        # gzip halves the bytes on 2G; every response with a secret in it (form token,
        # receipt code) carries a fresh random one, so compression cannot leak it (BREACH).
        middleware=[Middleware(SecurityHeaders),
                    Middleware(GZipMiddleware, minimum_size=512, compresslevel=6)],
        exception_handlers={HTTPException: web.http_error, Exception: web.crash},
    )
    app.router.redirect_slashes = False
    app.router.default = _slash_redirect(app.router)
    app.state.web = web
    return app
