"""utils.prefer.ratings: one fsynced CSV line per rating; corrupted lines skipped and reported."""

import os

import pytest

from utils.prefer import ratings as store
from utils.prefer.statistics import win_rates

HEADER = ",".join(store.FIELDS) + "\n"


def _ratings(spec, rater="ana", prompt="p0"):
    """Rating rows from (system_a, system_b, choice) triples, as the rater would write them."""
    item = {"prompt_id": prompt, "prompt": f"prompt {prompt}"}
    return [store.rating_row(rater, item, a, b, choice, "2025-01-01T00:00:00+00:00")
            for a, b, choice in spec]


def _write(path, rows):
    for row in rows:
        store.append_rating(path, row)
    return path


def test_append_writes_header_once_and_fsyncs(tmp_path, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    path = _write(tmp_path / "sub" / "preferences.csv", _ratings([("x", "y", "a"), ("y", "x", "tie")]))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] + "\n" == HEADER
    assert len(lines) == 3 and len(calls) == 2
    assert lines[2].endswith(",y,x,tie,tie,,")  # no texts in these items: no hashes


def test_prompt_with_newlines_stays_on_one_line(tmp_path):
    item = {"prompt_id": "p", "prompt": 'User: a poem\nabout "rain", C:\\ and\r\nAssistant:'}
    path = _write(tmp_path / "p.csv", [store.rating_row("ana", item, "x", "y", "b")])
    assert len(path.read_text(encoding="utf-8").splitlines()) == 2
    assert store.load_ratings(path).loc[0, "prompt"] == item["prompt"]


def test_corrupted_lines_are_reported_and_skipped(tmp_path):
    path = _write(tmp_path / "p.csv", _ratings([("x", "y", "a"), ("x", "y", "b"), ("y", "x", "a")]))
    good = path.read_bytes()
    rows = good.split(b"\n")
    broken = [rows[0], rows[1], b"2025-01-01,ana,p0,too few", rows[2],
              rows[3].replace(b",a,y", b",maybe,y"), "caf\u00e9".encode("latin-1") + rows[1], b""]
    path.write_bytes(b"\n".join(broken))
    with pytest.warns(UserWarning, match=r"skipped 3 corrupted line\(s\) \[3, 5, 6\]"):
        df = store.load_ratings(path)
    assert df.attrs["skipped"] == {3: "4 fields instead of 10", 5: "unknown choice 'maybe'",
                                   6: "not valid UTF-8"}
    assert list(df["choice"]) == ["a", "b"]
    table = win_rates(df)  # the analysis goes on with the good lines
    assert table.loc[0, "n"] == 2 and table.loc[0, "win_rate"] == 0.5


def test_torn_last_line_stays_apart_from_the_next_rating(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text(HEADER + "2025-01-01T00:00:00+00:00,ana,p0,prompt,x,y,a", encoding="utf-8")
    _write(path, _ratings([("x", "y", "b")]))
    with pytest.warns(UserWarning, match=r"skipped 1 corrupted line\(s\) \[2\]"):
        df = store.load_ratings(path)
    assert list(df["winner"]) == ["y"]


def test_empty_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("")
    with pytest.raises(ValueError, match="holds no ratings"):
        store.load_ratings(path)
    path.write_text(HEADER)
    with pytest.raises(ValueError, match="holds no ratings"):
        store.load_ratings(path)
    with pytest.raises(FileNotFoundError, match="rate some pairs first"):
        store.load_ratings(tmp_path / "missing.csv")


@pytest.mark.parametrize("header", [
    "\ufeff" + HEADER,  # Excel's "CSV UTF-8" starts with a byte-order mark
    ",".join(f'"{name}"' for name in store.FIELDS) + "\r\n",  # Excel quotes every name
])
def test_a_header_with_a_bom_or_quotes_is_accepted(tmp_path, header):  # catalogue: U4
    body = _write(tmp_path / "plain.csv", _ratings([("x", "y", "a"), ("y", "x", "b")])).read_bytes()
    path = tmp_path / "excel.csv"
    path.write_bytes(header.encode("utf-8") + body.split(b"\n", 1)[1])
    df = store.load_ratings(path)
    assert list(df["winner"]) == ["x", "x"] and df.attrs["skipped"] == {}
    path.write_bytes(b"when,who\n" + body.split(b"\n", 1)[1])
    with pytest.raises(ValueError, match="does not start with the header .* found 'when,who'"):
        store.load_ratings(path)
