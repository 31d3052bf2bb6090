"""An officer answers from his mail client: real Postfix, Dovecot and ``mailbridge serve``.

A form tip goes through Postfix into the station's Dovecot mailbox; an IMAP client
fetches it and answers as Thunderbird and as Gmail do (the tip quoted, a signature,
an HTML part, the client's own headers), over STARTTLS to the relay's SMTP intake,
from a distinctive loopback address. The tipster's page, opened with the receipt
code in Chromium without JavaScript, shows the two new texts and nothing of the officer.
"""

from __future__ import annotations

import secrets
import smtplib
import ssl
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.support import RelayProcess, free_port, smtp_station, submit, write_config
from tests.e2e.test_relay_e2e import _fetch_by_ref
from tests.servers.mailstack import MailStack

CLIENT = "127.0.0.77"
OFFICER = "Thiếu tá Hoàng Văn Sử"
MAILBOX = "station1@example.test"
SIGNATURE = "Thiếu tá Hoàng Văn Sử\nTrạm trưởng, ĐT 0912 345 678"
FROM_THUNDERBIRD = "Cảm ơn bà con. Tối nay tổ tuần tra sẽ ra bến sông."
FROM_GMAIL = "Bà con cho biết thuyền màu gì được không?"


def _quoted(tip: EmailMessage) -> str:
    body = tip.get_body(("plain",))
    assert body is not None
    return "\n".join(f"> {line}" if line else ">" for line in body.get_content().splitlines())


def _answer(tip: EmailMessage, user_agent: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"{OFFICER} <{MAILBOX}>"
    msg["To"] = str(tip["Reply-To"])
    msg["Subject"] = "Re: " + str(tip["Subject"])
    msg["Message-ID"] = f"<{secrets.token_hex(8)}@example.test>"
    msg["In-Reply-To"] = msg["References"] = str(tip["Message-ID"])
    msg["User-Agent"] = user_agent
    return msg


def thunderbird(tip: EmailMessage) -> EmailMessage:
    """Thunderbird in Vietnamese: answer on top, "Vào … đã viết:", '>' quote, '-- ' signature."""
    msg = _answer(tip, "Mozilla Thunderbird 128.5.0")
    when = tip["Date"].datetime.strftime("%d/%m/%Y %H:%M")
    msg.set_content(f"{FROM_THUNDERBIRD}\n\nVào {when}, mailbridge đã viết:\n{_quoted(tip)}\n\n"
                    f"-- \n{SIGNATURE}\n")
    return msg


def gmail(tip: EmailMessage) -> EmailMessage:
    """Gmail in English: plain and HTML alternatives, the attribution wrapped, gmail_quote."""
    msg = _answer(tip, "Gmail")
    when = tip["Date"].datetime.strftime("%a, %b %-d, %Y at %-I:%M %p")
    msg.set_content(f"{FROM_GMAIL}\n\nOn {when} mailbridge <tips@relay.example.test>\nwrote:\n\n"
                    f"{_quoted(tip)}\n\n-- \n{SIGNATURE}\n")
    body = tip.get_body(("plain",))
    assert body is not None
    quote = body.get_content().replace("\n", "<br>")
    msg.add_alternative(
        f'<div dir="ltr">{FROM_GMAIL}</div><br><div class="gmail_quote"><div dir="ltr" '
        f'class="gmail_attr">On {when} mailbridge &lt;<a href="mailto:tips@relay.example.test">'
        f'tips@relay.example.test</a>&gt; wrote:<br></div><blockquote class="gmail_quote" '
        f'style="margin:0px 0px 0px 0.8ex">{quote}</blockquote></div><br clear="all"><div>'
        f'<div dir="ltr" class="gmail_signature">{SIGNATURE.replace(chr(10), "<br>")}</div>'
        f"</div>", subtype="html")
    return msg


def send(msg: EmailMessage, port: int, ca_file: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    with smtplib.SMTP("127.0.0.1", port, source_address=(CLIENT, 0), timeout=30) as client:
        client.starttls(context=context)
        client.ehlo()
        assert not client.has_extn("auth")  # nothing to log in to, nothing to guess
        client.sendmail(MAILBOX, [str(msg["To"])], msg.as_bytes(policy=SMTP))


def read_status(browser: Any, base: str, code: str) -> str:
    """What the tipster reads: /status in Chromium with JavaScript off, the code typed."""
    context = browser.new_context(java_script_enabled=False, locale="vi-VN")
    try:
        page = context.new_page()
        page.goto(f"{base}/status")
        page.fill("#code", code)
        with page.expect_navigation():
            page.click("button[type=submit]")
        return str(page.locator("body").inner_text())
    finally:
        context.close()


@pytest.mark.servers
@pytest.mark.browser
def test_thunderbird_and_gmail_replies_reach_the_tipster_as_new_text_only(
        tmp_path: Path, mailstack: MailStack, browser: Any) -> None:
    prefix = "R" + secrets.token_hex(3).upper()
    port, smtp_port = free_port(), free_port()
    ssl_dir = mailstack.root / "ssl"
    config = write_config(tmp_path, port, smtp_station(mailstack, prefix),
                          extra=f'smtp_listen = "127.0.0.1:{smtp_port}"\n'
                                f'smtp_tls_cert = "{ssl_dir / "cert.pem"}"\n'
                                f'smtp_tls_key = "{ssl_dir / "key.pem"}"\n')
    with (tmp_path / ".env").open("a") as env:
        env.write("STATION_SMTP_PASSWORD=secret\n")
    relay = RelayProcess(config, port).start()
    try:
        with httpx.Client(timeout=30) as client:
            receipt = submit(client, relay.base, "/s/ncs/cho", "Có thuyền lạ ở bến sông lúc tối.")
            tip = _fetch_by_ref(mailstack, receipt.ref)
            send(thunderbird(tip), smtp_port, mailstack.ca_file)
            send(gmail(tip), smtp_port, mailstack.ca_file)
        page = read_status(browser, relay.base, receipt.code)
    finally:
        relay.stop()
    assert FROM_THUNDERBIRD in page and FROM_GMAIL in page
    for leak in ("Hoàng Văn Sử", MAILBOX, "0912", "Thunderbird", "Gmail", "wrote", "đã viết",
                 "Re:", "Có thuyền lạ", "tips@relay"):
        assert leak not in page, leak
    logs = relay.logs()
    assert CLIENT not in logs and MAILBOX not in logs and "mail.log" not in logs
