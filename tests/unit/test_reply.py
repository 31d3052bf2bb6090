"""core/reply.py: the officer's new text, as each mail client really quotes a tip.

The samples are typed the way Gmail, Outlook, Thunderbird, Apple Mail and Zimbra
write a reply in plain text (and HTML), in Vietnamese and in English.
"""

from __future__ import annotations

import email
from email.message import EmailMessage, Message
from email.policy import default

import pytest

from mailbridge.core.reply import html_to_text, new_text, noise, reply_text

QUOTED_TIP = """\
> Mã tham chiếu: NCS-0042
> Loại tin: Ma túy
> Nhận lúc (giờ, UTC): 2026-12-01 09:00
>
> Có người bán hàng cấm ở chợ phiên sáng thứ Bảy.
>
> --\x20
> Trả lời thư này để trả lời người báo tin; họ đọc bằng mã biên nhận.
"""
UNQUOTED_TIP = QUOTED_TIP.replace("> ", "").replace(">\n", "\n")

CASES = {
    "thunderbird en": (
        "Thank you. We will send a patrol on Saturday.\n\n"
        "On 01/12/2026 09:15, mailbridge wrote:\n" + QUOTED_TIP +
        "\n-- \nMajor Nguyen Van An\nNam Can border post\n",
        "Thank you. We will send a patrol on Saturday."),
    "thunderbird vi": (
        "Cảm ơn bà con. Sáng thứ Bảy chúng tôi sẽ cử tổ tuần tra.\n\n"
        "Vào 01/12/2026 09:15, mailbridge đã viết:\n" + QUOTED_TIP +
        "\n-- \nThiếu tá Nguyễn Văn An\nĐồn Biên phòng Nậm Cắn\n",
        "Cảm ơn bà con. Sáng thứ Bảy chúng tôi sẽ cử tổ tuần tra."),
    "gmail en, attribution wrapped": (
        "Received, thank you. Can you say which stall?\n\n"
        "On Tue, Dec 1, 2026 at 9:15 AM mailbridge <tips@relay.example.org>\nwrote:\n\n"
        + QUOTED_TIP,
        "Received, thank you. Can you say which stall?"),
    "gmail vi, attribution wrapped": (
        "Đã nhận. Bà con cho biết sạp nào được không?\n\n"
        "Vào Th 3, 1 thg 12, 2026 vào lúc 09:15 mailbridge <\n"
        "tips@relay.example.org> đã viết:\n\n" + QUOTED_TIP,
        "Đã nhận. Bà con cho biết sạp nào được không?"),
    "outlook en, separator line": (
        "We have passed this on to the district team.\n\n"
        "Best regards,\nNguyen Van An\nDeputy head, Nam Can border post\nTel. 0912 345 678\n\n"
        "________________________________\n"
        "From: mailbridge <tips@relay.example.org>\n"
        "Sent: Tuesday, December 1, 2026 9:15 AM\n"
        "To: Nam Can border post <don.namcan@example.vn>\n"
        "Subject: [NCS-0042] Drugs — Someone sells at the market\n\n" + UNQUOTED_TIP,
        "We have passed this on to the district team."),
    "outlook en, original message": (
        "Noted.\n\n-----Original Message-----\n"
        "From: mailbridge <tips@relay.example.org>\n"
        "Sent: Tuesday, December 1, 2026 9:15 AM\n"
        "To: don.namcan@example.vn\nSubject: [NCS-0042] Drugs\n\n" + UNQUOTED_TIP,
        "Noted."),
    "outlook vi": (
        "Đồn đã nhận tin, cảm ơn bà con.\n\n"
        "Trân trọng,\nNguyễn Văn An\nĐồn Biên phòng Nậm Cắn\n\n"
        "________________________________\n"
        "Từ: mailbridge <tips@relay.example.org>\n"
        "Đã gửi: Thứ Ba, ngày 1 tháng 12 năm 2026 9:15 SA\n"
        "Đến: Đồn Biên phòng Nậm Cắn <don.namcan@example.vn>\n"
        "Chủ đề: [NCS-0042] Ma túy — Có người bán hàng cấm\n\n" + UNQUOTED_TIP,
        "Đồn đã nhận tin, cảm ơn bà con."),
    "apple mail en": (
        "We know the place. Thank you.\n\nSent from my iPhone\n\n"
        "> On Dec 1, 2026, at 09:15, mailbridge <tips@relay.example.org> wrote:\n>\n"
        + QUOTED_TIP,
        "We know the place. Thank you."),
    "apple mail vi": (
        "Chúng tôi biết chỗ đó. Cảm ơn.\n\nGửi từ iPhone của tôi\n\n"
        "> Vào 09:15, ngày 1 thg 12, 2026, mailbridge <tips@relay.example.org> đã viết:\n>\n"
        + QUOTED_TIP,
        "Chúng tôi biết chỗ đó. Cảm ơn."),
    "zimbra en": (
        "A team is on its way.\n\n----- Original Message -----\n"
        'From: "mailbridge" <tips@relay.example.org>\n'
        'To: "Nam Can border post" <don.namcan@example.vn>\n'
        "Sent: Tuesday, December 1, 2026 9:15:00 AM\n"
        "Subject: [NCS-0042] Drugs\n\n" + UNQUOTED_TIP,
        "A team is on its way."),
    "zimbra vi": (
        "Tổ công tác đang đến.\n\n----- Thư gốc -----\n"
        'Từ: "mailbridge" <tips@relay.example.org>\n'
        'Đến: "Đồn Biên phòng Nậm Cắn" <don.namcan@example.vn>\n'
        "Đã gửi: Thứ Ba, 1 Tháng Mười Hai 2026 9:15:00\n"
        "Chủ đề: [NCS-0042] Ma túy\n\n" + UNQUOTED_TIP,
        "Tổ công tác đang đến."),
    "a list in the answer is kept": (
        "Please tell us:\n- which stall\n- what time\n\n"
        "On Tue, Dec 1, 2026 at 9:15 AM mailbridge <tips@relay.example.org> wrote:\n"
        + QUOTED_TIP,
        "Please tell us:\n- which stall\n- what time"),
    "answers between quoted lines": (
        "> Có người bán hàng cấm ở chợ phiên sáng thứ Bảy.\n"
        "Sạp nào? Gần cổng hay gần bến xe?\n> Mã tham chiếu: NCS-0042\n",
        "Sạp nào? Gần cổng hay gần bến xe?"),
    "addresses and the sender's name are removed": (
        "Viết cho chúng tôi ở an.nguyen@bienphong.example.vn hoặc gọi Nguyễn Văn An.\n",
        "Viết cho chúng tôi ở  hoặc gọi ."),
}


@pytest.mark.parametrize(("body", "expected"), CASES.values(), ids=CASES.keys())
def test_new_text_keeps_only_the_officers_words(body: str, expected: str) -> None:
    assert new_text(body, remove=["Nguyễn Văn An", "an.nguyen@bienphong.example.vn"]) == expected


def test_decomposed_vietnamese_is_read_as_nfc() -> None:
    import unicodedata
    body = unicodedata.normalize("NFD", "Đã rõ.\n\nVào 01/12/2026 09:15, mailbridge đã viết:\n"
                                 + QUOTED_TIP)
    assert new_text(body) == "Đã rõ."


HTML = {
    "gmail": (
        '<div dir="ltr">Cảm ơn bà con.<br>Chúng tôi sẽ kiểm tra.</div><br>'
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">Vào Th 3, 1 thg 12, 2026 '
        'vào lúc 09:15 mailbridge &lt;<a href="mailto:tips@relay.example.org">'
        'tips@relay.example.org</a>&gt; đã viết:<br></div><blockquote class="gmail_quote" '
        'style="margin:0px 0px 0px 0.8ex">Mã tham chiếu: NCS-0042<br>Có người bán hàng cấm'
        '</blockquote></div><div><div dir="ltr" class="gmail_signature">Thiếu tá Nguyễn Văn An'
        '<br>Đồn Biên phòng Nậm Cắn</div></div>',
        "Cảm ơn bà con.\nChúng tôi sẽ kiểm tra."),
    "thunderbird": (
        "<html><head><meta http-equiv=\"content-type\" content=\"text/html; charset=UTF-8\">"
        "</head><body><p>We will check the market on Saturday.</p>"
        '<div class="moz-cite-prefix">On 01/12/2026 09:15, mailbridge wrote:<br></div>'
        '<blockquote type="cite">Reference: NCS-0042<br>Someone sells drugs</blockquote>'
        '<div class="moz-signature">-- <br>Major Nguyen Van An</div></body></html>',
        "We will check the market on Saturday."),
    "outlook": (
        '<html><head><style>p{margin:0}</style></head><body><div class="elementToProof">'
        "Đồn đã nhận tin.</div><div id=\"Signature\"><p>Trân trọng,<br>Nguyễn Văn An</p></div>"
        '<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg" dir="ltr">'
        "<b>Từ:</b> mailbridge &lt;tips@relay.example.org&gt;<br><b>Đã gửi:</b> Thứ Ba, ngày 1 "
        "tháng 12 năm 2026 9:15<br><b>Đến:</b> Đồn Nậm Cắn</div><div>Mã tham chiếu: NCS-0042"
        "</div></body></html>",
        "Đồn đã nhận tin."),
}


@pytest.mark.parametrize(("page", "expected"), HTML.values(), ids=HTML.keys())
def test_html_replies_lose_quote_and_signature(page: str, expected: str) -> None:
    assert new_text(html_to_text(page)) == expected


def reply_message(plain: str | None, page: str | None = None, *,
                  sender: str = "Nguyễn Văn An <an.nguyen@bienphong.example.vn>",
                  to: str = "reply+abc@relay.example.org", **headers: str) -> EmailMessage:
    """A reply as a mail client builds it: plain text, HTML, or both as alternatives;
    ``Auto_Submitted="x"`` adds ``Auto-Submitted: x``."""
    msg = EmailMessage(policy=default)
    msg["From"] = sender
    msg["To"] = to
    headers.setdefault("Subject", "Re: [NCS-0042] Ma túy")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    if plain is not None:
        msg.set_content(plain)
    if page is not None:
        if plain is None:
            msg.set_content(page, subtype="html")
        else:
            msg.add_alternative(page, subtype="html")
    return msg


def _reply(plain: str | None, page: str | None, **headers: str) -> Message:
    return email.message_from_bytes(reply_message(plain, page, **headers).as_bytes(),
                                    policy=default)


def test_plain_part_preferred_html_only_converted() -> None:
    both = _reply("Trả lời thường.\n\n" + "Vào 01/12/2026 09:15, mailbridge đã viết:\n"
                  + QUOTED_TIP, "<p>Trả lời HTML.</p>")
    assert reply_text(both) == "Trả lời thường."
    html_only = _reply(None, HTML["gmail"][0])
    assert reply_text(html_only) == "Cảm ơn bà con.\nChúng tôi sẽ kiểm tra."


def test_no_header_reaches_the_text() -> None:
    text = reply_text(_reply("Đã rõ.\n", None, X_Mailer="Thunderbird 128.5"))
    assert text == "Đã rõ."


NOISE = {
    "auto-replied": ({"Auto_Submitted": "auto-replied"}, "x@y.vn", "Auto-Submitted"),
    "Precedence: bulk": ({"Precedence": "bulk"}, "x@y.vn", "Precedence"),
    "Precedence: list": ({"Precedence": "list"}, "x@y.vn", "Precedence"),
    "null sender": ({}, "", "null sender"),
    "Return-Path <>": ({"Return_Path": "<>"}, "x@y.vn", "null sender"),
    "our loop header": ({"X_Loop": "mailbridge"}, "x@y.vn", "loop header"),
    "our own tip back": ({"X_Mailbridge_Ref": "NCS-0042"}, "x@y.vn", "a message of our own"),
    "a person's reply": ({"Auto_Submitted": "no"}, "x@y.vn", ""),
}


@pytest.mark.parametrize(("headers", "sender", "reason"), NOISE.values(), ids=NOISE.keys())
def test_noise(headers: dict[str, str], sender: str, reason: str) -> None:
    assert noise(_reply("Đã rõ.", None, **headers), sender) == reason


def test_a_delivery_report_is_noise() -> None:
    report = email.message_from_bytes(
        b"From: MAILER-DAEMON@example.vn\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nUndeliverable\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        b"--b--\r\n", policy=default)
    assert noise(report, "MAILER-DAEMON@example.vn") == "delivery report"


def test_long_lines_are_kept_whole_and_cannot_stall_the_parser() -> None:
    paragraph = "Đồn đã nhận tin và sẽ kiểm tra từng nhà ở cuối bản. " * 40  # one long line
    body = f"{paragraph.strip()}\n\nOn Tue, Dec 1, 2026 at 9:15 AM mailbridge wrote:\n> x\n"
    assert new_text(body) == paragraph.strip()
    # Anyone can mail the relay: a 150 KB line of "On On On …" took minutes before.
    assert new_text("On " * 50_000) == ("On " * 50_000)[:5000].strip()


def test_a_flowed_thunderbird_reply_reads_as_one_paragraph() -> None:
    raw = ("From: an@bienphong.example.vn\r\nTo: reply+abc@relay.example.org\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8; format=flowed\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\n"
           "C\u1ea3m \u01a1n b\u00e0 con \u0111\u00e3 b\u00e1o tin. S\u00e1ng th\u1ee9 B\u1ea3y "
           "ch\u00fang t\u00f4i s\u1ebd c\u1eed t\u1ed5 tu\u1ea7n tra \r\n"
           "ra b\u1ebfn s\u00f4ng.\r\n \r\n"
           "Xin cho bi\u1ebft th\u00eam n\u1ebfu th\u1ea5y l\u1ea1i.\r\n\r\n"
           "V\u00e0o 01/12/2026 09:15, mailbridge \u0111\u00e3 vi\u1ebft:\r\n> M\u00e3 tham "
           "chi\u1ebfu: NCS-0042 \r\n> C\u00f3 ng\u01b0\u1eddi\r\n\r\n-- \r\nAn\r\n")
    msg = email.message_from_bytes(raw.encode("utf-8"), policy=default)
    assert reply_text(msg) == ("Cảm ơn bà con đã báo tin. Sáng thứ Bảy chúng tôi sẽ cử tổ "
                               "tuần tra ra bến sông.\n\nXin cho biết thêm nếu thấy lại.")
