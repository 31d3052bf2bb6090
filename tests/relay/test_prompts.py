"""Audio prompts: the recordings a station adds for the form, served from memory by hash."""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest

from mailbridge.config import load_config
from mailbridge.demo import ensure_prompts, make_prompts, write_demo_config
from mailbridge.errors import ConfigError, RuntimeFailure
from mailbridge.relay.prompts import CACHE, Prompts
from tests.relay.test_web import FORM, changed_relay

LANGUAGES = ("vi", "hmn", "hmn-chv", "en")


def test_recordings_are_found_by_language_and_named_by_their_hash(tmp_path: Path) -> None:
    for name, data in [("vi.m4a", b"vi"), ("hmn-2.ogg", b"two"), ("hmn-1.ogg", b"one"),
                       ("hmn-chv.mp3", b"chv")]:
        (tmp_path / name).write_bytes(data)
    prompts = Prompts({"ncs": tmp_path}, LANGUAGES)
    assert len(prompts.urls("ncs", "vi")) == 1 and prompts.urls("ncs", "en") == []
    first, second = prompts.urls("ncs", "hmn")  # in name order
    name = first.rsplit("/", 1)[1]
    prompt = prompts.get("ncs", name)
    assert prompt is not None and prompt.data == b"one" and prompt.media_type == "audio/ogg"
    assert second.endswith(".ogg") and first != second
    chv = prompts.get("ncs", prompts.urls("ncs", "hmn-chv")[0].rsplit("/", 1)[1])
    assert chv is not None and chv.data == b"chv" and chv.media_type == "audio/mpeg"
    assert prompts.get("ncs", "vi.m4a") is None and prompts.get("pvs", name) is None


@pytest.mark.parametrize(("name", "size", "says"), [
    ("fr.m4a", 10, "fr.m4a is not LANG.EXT or LANG-NAME.EXT"),
    ("vi.flac", 10, "vi.flac is not LANG.EXT"),
    ("vi.m4a", 3 * 1024 * 1024, "vi.m4a is 3072 KB, more than 2048 KB"),
])
def test_a_wrong_recording_is_one_line_naming_the_key(tmp_path: Path, name: str, size: int,
                                                      says: str) -> None:
    (tmp_path / name).write_bytes(b"x" * size)
    with pytest.raises(ConfigError) as info:
        Prompts({"ncs": tmp_path}, LANGUAGES)
    assert str(info.value).startswith("stations.ncs.audio_prompts: ") and says in str(info.value)
    assert "\n" not in str(info.value)


def test_a_missing_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a folder: create it"):
        Prompts({"ncs": tmp_path / "nope"}, LANGUAGES)


def test_the_demo_speaks_vietnamese_with_espeak_ng(tmp_path: Path) -> None:
    make_prompts(tmp_path / "prompts")
    assert sorted(p.name for p in (tmp_path / "prompts").iterdir()) == ["vi.m4a"]
    with av.open(str(tmp_path / "prompts" / "vi.m4a")) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.channels == 1
        seconds = float(container.duration or 0) / av.time_base
    assert 3 < seconds < 30  # the form's four instructions, spoken


def test_without_espeak_ng_the_demo_names_the_package(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no espeak-ng on it
    with pytest.raises(RuntimeFailure) as info:
        make_prompts(tmp_path / "prompts")
    assert "install the Debian package espeak-ng" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "prompts").exists()
    assert os.environ["PATH"] == str(tmp_path)


def test_without_espeak_ng_the_demo_runs_without_spoken_instructions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make demo` needs only python3 and make: a missing espeak-ng is one note, the
    relay starts with an empty prompts folder, and a later run with it makes them."""
    settings = load_config(write_demo_config(tmp_path / "demo", 8080))
    folder = settings.stations["ncs"].audio_prompts
    assert folder is not None
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no espeak-ng on it
    (note,) = ensure_prompts(settings)
    assert note.startswith("demo: no spoken instructions for ncs: espeak-ng is missing")
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert Prompts({"ncs": folder}, LANGUAGES).urls("ncs", "vi") == []  # serve starts
    monkeypatch.setenv("PATH", path)
    assert ensure_prompts(settings) == []
    assert [p.name for p in folder.iterdir()] == ["vi.m4a"]


def test_the_form_offers_the_recordings_of_its_language_and_serves_them_cached(
        tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "hmn.m4a").write_bytes(b"hmong prompt")
    with changed_relay(tmp_path, {"audio_prompts": folder}) as client:
        hmong, vietnamese = client.get(FORM + "?lang=hmn"), client.get(FORM)
        src = hmong.text.split('<audio preload=none controls src="', 1)[1].split('"')[0]
        sound, missing = client.get(src), client.get(src.replace("/ncs/", "/pvs/"))
    assert "<audio" not in vietnamese.text and hmong.text.count("<audio") == 1
    assert "media-src 'self'" in hmong.headers["content-security-policy"]
    assert sound.status_code == 200 and sound.content == b"hmong prompt"
    assert sound.headers["content-type"] == "audio/mp4"
    assert sound.headers["cache-control"] == CACHE
    assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
    assert hmong.headers["cache-control"] == "no-store"
