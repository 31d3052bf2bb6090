"""Boxes with a purpose: a feedback box beside a tip box, on one relay."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailbridge.config import BUILTIN_CATEGORIES, FEEDBACK_CATEGORIES, Settings, load_config
from mailbridge.demo import fill_form
from mailbridge.errors import ConfigError
from tests.e2e.support import MAILDIR_STATION, SECRET, maildir_files, relay_in_thread, relay_toml
from tests.waiting import wait_for

FEEDBACK_STATION = """
[[stations]]
id = "d1"
name = "Tiểu đoàn 1"
purpose = "feedback"
mailbox = "gopy@d1.example.test"
maildir = "mail/d1"
placements = [{ id = "nha-an", label = "Nhà ăn" }]
"""
OWN_WORDS = """
[[stations]]
id = "d2"
name = "Đại đội 2"
purpose = "feedback"
mailbox = "gopy@d2.example.test"
maildir = "mail/d2"
intro = { vi = "Góp ý cho chi bộ đại đội." }
[[stations.categories]]
id = "meals"
labels = { vi = "Bữa ăn", hmn = "Zaub mov", en = "Meals" }
pictogram = "living"
[[stations.categories]]
id = "other"
"""


def settings_for(folder: Path, stations: str) -> Settings:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mailbridge.toml"
    path.write_text(relay_toml(stations), encoding="utf-8")
    return load_config(path, env={"MAILBRIDGE_SECRET": SECRET})


@pytest.fixture(scope="module")
def two_boxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    settings = settings_for(tmp_path_factory.mktemp("purpose"), MAILDIR_STATION
                            + FEEDBACK_STATION + OWN_WORDS)
    with relay_in_thread(settings) as base:
        yield settings, base


def test_purpose_picks_the_default_categories(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, MAILDIR_STATION + FEEDBACK_STATION)
    tips, feedback = settings.stations["ncs"], settings.stations["d1"]
    assert (tips.purpose, tips.categories) == ("tips", BUILTIN_CATEGORIES)
    assert (feedback.purpose, feedback.categories) == ("feedback", FEEDBACK_CATEGORIES)
    # The officers' filters and the report know every box's categories, each once.
    ids = [c.id for c in settings.categories]
    assert len(ids) == len(set(ids)) and {"drugs", "living", "other"} <= set(ids)
    assert feedback.category("drugs") is None and feedback.category("living") is not None


def test_an_unknown_purpose_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_for(tmp_path, FEEDBACK_STATION.replace('"feedback"', '"opinions"'))
    assert str(caught.value).splitlines() == [
        f"stations.d1.purpose must be \"tips\" or \"feedback\", got 'opinions' "
        f"({tmp_path / 'mailbridge.toml'})"]


def test_the_feedback_form_has_its_own_words_and_categories(
        two_boxes: tuple[Settings, str]) -> None:
    _, base = two_boxes
    with httpx.Client(base_url=base, timeout=30) as client:
        feedback = client.get("/s/d1/nha-an").text
        tips = client.get("/s/ncs/cho").text
    assert "<h1>Hòm thư góp ý</h1>" in feedback and "Đời sống, ăn ở" in feedback
    assert "Gửi ý kiến" in feedback and "Ma túy" not in feedback
    assert feedback.count("type=radio name=category") == len(FEEDBACK_CATEGORIES)
    assert feedback.count("<svg class=p") == len(FEEDBACK_CATEGORIES)
    assert "<h1>Gửi tin báo</h1>" in tips and "Hòm thư góp ý" not in tips
    assert "Đời sống, ăn ở" not in tips and "Ma túy" in tips


def test_a_feedback_box_takes_its_categories_only(two_boxes: tuple[Settings, str]) -> None:
    settings, base = two_boxes
    url = f"{base}/s/d1/nha-an"
    with httpx.Client(timeout=30) as client:
        target, fields = fill_form(client.get(url).text, url, "Cơm chiều nguội.",
                                   {"category": "drugs"})
        refused = client.post(target, data=fields)
        target, fields = fill_form(client.get(url).text, url, "Cơm chiều nguội.",
                                   {"category": "living"})
        sent = client.post(target, data=fields)
    assert refused.status_code == 400
    assert sent.status_code == 200
    maildir = settings.stations["d1"].maildir
    assert maildir is not None
    wait_for(lambda: maildir_files(maildir), "the feedback in its Maildir", timeout=30)
    raw = maildir_files(maildir)[0].read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["X-Mailbridge-Category"] == "living"
    assert "Đời sống, ăn ở" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_a_box_may_have_its_own_categories_and_intro(two_boxes: tuple[Settings, str]) -> None:
    settings, base = two_boxes
    assert [c.id for c in settings.stations["d2"].categories] == ["meals", "other"]
    assert "meals" in [c.id for c in settings.categories]
    with httpx.Client(base_url=base, timeout=30) as client:
        vi = client.get("/s/d2").text
        en = client.get("/s/d2?lang=en").text
    assert "<p>Góp ý cho chi bộ đại đội.</p>" in vi and "Bữa ăn" in vi
    assert vi.count("type=radio name=category") == 2 and "Đời sống, ăn ở" not in vi
    # No English intro of its own: the feedback box's default words.
    assert "Say what you think about daily life" in en and "Góp ý cho chi bộ" not in en


def test_a_bad_intro_is_one_line_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^stations\.d2\.intro must map languages to text"):
        settings_for(tmp_path, OWN_WORDS.replace('"Góp ý cho chi bộ đại đội."', "3"))
