"""Tests for utils/prefer/rater.py: the A/B rater driven by programmatic clicks, read back from disk."""

import csv
import os

import pytest

from utils.prefer import ratings
from utils.prefer.items import prompt_id
from utils.prefer.rater import ABRater

ITEMS = [
    {"prompt": "Write about rain", "outputs": {"alpha-sys": "wet <roofs>", "beta-sys": "grey sky"}},
    {"prompt": "Write about sea", "outputs": {"alpha-sys": "salt", "beta-sys": "blue & deep"}},
    {"prompt": "Write about moon", "outputs": {"alpha-sys": "pale", "beta-sys": "round"}},
]


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_click_without_a_name_asks_for_it_and_writes_nothing(tmp_path):
    path = tmp_path / "preferences.csv"
    rater = ABRater(ITEMS, path=path)
    rater.buttons["a"].click()
    assert "type your name" in rater.message.value
    assert not path.exists() and rater.position == 0
    rater.name.value = "   "  # blanks are no name either
    rater.buttons["tie"].click()
    assert not path.exists()


def test_clicks_are_saved_with_the_systems_shown_as_a_and_b(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    path = tmp_path / "preferences.csv"
    rater = ABRater(ITEMS, path=path, seed=3)
    rater.name.value = "ana"
    shown = []
    for choice in ["a", "b", "tie"]:
        now = rater.current()
        on_screen = [rater.prompt.value, rater.output_a.value, rater.output_b.value,
                     rater.progress.value, rater.message.value]
        assert not any("-sys" in text for text in on_screen)  # blind: system names stay hidden
        assert rater.output_a.value.count("&lt;roofs&gt;") == (now["text_a"] == "wet <roofs>")
        shown.append(now)
        rater.buttons[choice].click()
        assert len(_read(path)) == len(shown)  # on disk before the next pair appears
    assert len(synced) == 3
    rows = _read(path)
    for row, now, choice in zip(rows, shown, ["a", "b", "tie"]):
        item = next(i for i in ITEMS if i["prompt"] == now["prompt"])
        assert (row["system_a"], row["system_b"]) == (now["system_a"], now["system_b"])
        assert item["outputs"][row["system_a"]] == now["text_a"]
        assert item["outputs"][row["system_b"]] == now["text_b"]
        assert row["choice"] == choice and row["rater"] == "ana"
        assert row["prompt_id"] == prompt_id(now["prompt"])
    assert [r["winner"] for r in rows] == [shown[0]["system_a"], shown[1]["system_b"], "tie"]
    assert "Thank you" in rater.message.value
    assert all(b.disabled for b in rater.buttons.values()) and rater.name.disabled
    rater.buttons["a"].click()  # after the end: nothing more is written
    assert len(_read(path)) == 3


def test_order_and_sides_are_random_but_seeded(tmp_path):
    def layout(seed):
        rater = ABRater(ITEMS * 4, path=tmp_path / "x.csv", seed=seed)
        return [(p["prompt"], sides) for p, sides in zip(rater.pairs, rater.sides)]

    assert layout(1) == layout(1)
    assert layout(1) != layout(2)
    sides = [s for _, s in layout(1)]
    assert ("alpha-sys", "beta-sys") in sides and ("beta-sys", "alpha-sys") in sides


def test_second_session_appends_below_one_header(tmp_path):
    path = tmp_path / "preferences.csv"
    for name in ["ana", "ben"]:
        rater = ABRater(ITEMS[:1], path=path, seed=0)
        rater.name.value = name
        rater.buttons["skip"].click()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(ratings.FIELDS) and len(lines) == 3
    df = ratings.load_ratings(path)
    assert list(df["rater"]) == ["ana", "ben"] and list(df["winner"]) == ["", ""]


def test_three_systems_become_three_pairs_and_one_system_raises(tmp_path):
    rater = ABRater([{"prompt": "p", "outputs": {"x": "1", "y": "2", "z": "3"}}], path=tmp_path / "x.csv")
    assert sorted(tuple(sorted(s)) for s in rater.sides) == [("x", "y"), ("x", "z"), ("y", "z")]
    assert rater.progress.value == "pair 1 of 3"
    with pytest.raises(ValueError, match="at least two"):
        ABRater([{"prompt": "p", "outputs": {"x": "1"}}], path=tmp_path / "x.csv")
