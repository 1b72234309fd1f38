"""Local copies of both datasets (parquet, jsonl, CSV) and the hub path, read by the same functions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from utils.config import get_profile
from utils.data import prepare, sources
from utils.data import sources as data_sources
from utils.data.sources import DataError

ROOT = Path(__file__).resolve().parent.parent

# Invented lines for the test; nothing here comes from the real datasets.
POEMS = ["the heron stands in the shallows\nand counts the slow fish under the reeds\n"
         "while the tide forgets the name of the moon and the mud keeps every footprint",
         "a tin cup rattles on the gate\nthe wind has letters for the house",
         "snow on the rail line\nthe last train hums a low song to the dark",
         "salt on the window of the bakery\nbread cooling in rows like sleeping cats"]


def conversation(i: int) -> str:
    if i == 0:  # an answer copying a run of 13+ words from poem 0: cross-dataset contamination
        return ("User: Write about a heron.\nAssistant: the heron stands in the shallows and "
                "counts the slow fish under the reeds while the tide waits")
    return f"User: Write poem number {i} about weather.\nAssistant: rain number {i} taps\nthe roof {i} times"


def hub_layout(root: Path) -> Path:
    """Both datasets as the hub ships them: the poems CSV, and instructions as parquet shards."""
    poems_dir = root / "Poetry-Foundation-Poems"
    poems_dir.mkdir(parents=True)
    frame = pd.DataFrame({"Title": [f"\r\r\n  Poem {i} \r\r\n" for i in range(len(POEMS))],
                          "Poem": [p.replace("\n", "\r\r\n") for p in POEMS],
                          "Poet": ["Nell Otter"] * len(POEMS), "Tags": [None, "Nature", None, "Food"]})
    frame.to_csv(poems_dir / "PoetryFoundationData.csv")  # index=True: the unnamed column
    shards = root / "poetry-instructions" / "data"
    shards.mkdir(parents=True)
    sizes = {"train": 12, "validation": 3, "test": 4}
    start = 0
    for split, n in sizes.items():
        rows = [conversation(start + i) for i in range(n)]
        start += n
        pd.DataFrame({"conversation": rows}).to_parquet(
            shards / f"{split}-00000-of-00001-0a1b2c3d4e5f6789.parquet")
    return root


def test_data_dir_reads_the_hub_layout(tmp_path):
    profile = get_profile("tiny").replace(data={"data_dir": hub_layout(tmp_path / "copy")})
    raw = sources.load_poems(profile)
    assert len(raw) == 4 and raw["Tags"].isna().sum() == 2
    dd = sources.load_instructions(profile)
    assert {s: len(dd[s]) for s in dd} == {"train": 12, "validation": 3, "test": 4}
    assert dd["train"]["conversation"][0].startswith("User: Write about a heron.")


def test_hub_path_uses_the_same_reader(tmp_path, monkeypatch):
    # A stub hub: snapshot_download hands back our folders, as the real one returns its cache.
    copy = hub_layout(tmp_path / "hub")
    folders = {"suayptalha/Poetry-Foundation-Poems": copy / "Poetry-Foundation-Poems",
               "isaacrehg/poetry-instructions": copy / "poetry-instructions"}
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo, **kw: str(folders[repo]))
    from_hub = sources.load_instructions("gpt2")
    local = sources.load_instructions(get_profile("tiny").replace(data={"data_dir": copy}))
    assert {s: from_hub[s]["conversation"] for s in from_hub} == {s: local[s]["conversation"] for s in local}
    hub_poems, _ = prepare.clean_poems(sources.load_poems("gpt2"))
    local_poems, _ = prepare.clean_poems(sources.load_poems(get_profile("tiny").replace(data={"data_dir": copy})))
    assert hub_poems.equals(local_poems)


def test_pipeline_data_stage_offline_on_a_local_copy(tmp_path):
    copy = hub_layout(tmp_path / "copy")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "POET_RUNS_DIR": str(tmp_path / "runs")}
    result = subprocess.run([sys.executable, "-m", "utils.pipeline", "--profile", "tiny",
                             "--data-dir", str(copy), "--stages", "data", "--run-name", "local"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "runs" / "local" / "data_report.json").read_text())
    assert report["poems"]["rows_kept"] == 4 and report["poems"]["missing_tags"] == 2
    assert report["instructions"]["rows_read"] == {"train": 12, "validation": 3, "test": 4}
    # conversation 0 (in train) copies 13+ words of poem 0; nothing else overlaps.
    assert report["contamination"]["train"]["13gram"] == 1
    assert report["contamination"]["poems_involved"] == 1
    config = json.loads((tmp_path / "runs" / "local" / "config.json").read_text())
    assert config["profile"]["data"]["data_dir"] == str(copy)


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_sample_layout_in_other_formats(tmp_path, kind):
    folder = tmp_path / "flat"
    folder.mkdir()
    pd.DataFrame({"Title": ["t"], "Poem": ["a line"], "Poet": ["p"], "Tags": ["x"]}).to_parquet(
        folder / "PoetryFoundationData.parquet")
    for split in sources.SPLITS:
        frame = pd.DataFrame({"conversation": [conversation(5)]})
        if kind == "jsonl":
            frame.to_json(folder / f"{split}.jsonl", orient="records", lines=True)
        else:
            frame.to_csv(folder / f"{split}.csv", index=False)
    profile = get_profile("tiny").replace(data={"data_dir": folder})
    assert sources.load_poems(profile)["Poem"].tolist() == ["a line"]
    assert sources.load_instructions(profile)["test"]["conversation"] == [conversation(5)]


def test_unsupported_format_names_the_supported_ones(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "PoetryFoundationData.xlsx").write_bytes(b"PK\x03\x04")
    profile = get_profile("tiny").replace(data={"data_dir": folder})
    with pytest.raises(DataError, match=r"PoetryFoundationData\.xlsx.*'\.xlsx'.*\.parquet, \.jsonl"):
        sources.load_poems(profile)
    (folder / "train.arrow").write_bytes(b"x")
    with pytest.raises(DataError, match=r"train\.arrow.*supported: \.parquet"):
        data_sources.find_instruction_files(folder)


def test_a_broken_parquet_file_never_gets_encoding_advice(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    path.write_bytes(b"PAR1\xff\xfe\x00 not really parquet \xe9")
    with pytest.raises(DataError, match="not a valid parquet file") as info:
        data_sources.read_instruction_files({"train": path})
    assert "UTF-8" not in str(info.value) and "iconv" not in str(info.value)
    good = tmp_path / "validation.parquet"
    pd.DataFrame({"conversation": ["café ☕"]}).to_parquet(good)  # binary, not UTF-8 text: fine
    assert data_sources.read_instruction_files({"validation": good})["validation"]["conversation"] == ["café ☕"]


def test_missing_data_dir_and_missing_split(tmp_path):
    with pytest.raises(DataError, match="does not exist|no poems file"):
        sources.load_poems(get_profile("tiny").replace(data={"data_dir": tmp_path / "nowhere"}))
    copy = hub_layout(tmp_path / "copy")
    next((copy / "poetry-instructions" / "data").glob("test-*")).unlink()
    with pytest.raises(DataError, match=r"split\(s\) \['test'\]"):
        sources.load_instructions(get_profile("tiny").replace(data={"data_dir": copy}))


def test_a_malformed_json_lines_file_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    good = json.dumps({"conversation": conversation(1)})
    path.write_text(f"{good}\n\n{good}\n{{\"conversation\": \"User: hi\n")
    with pytest.raises(DataError, match=r"train\.jsonl, line 4 is not valid JSON.*fix or delete that line"):
        data_sources.read_instruction_files({"train": path})
    path.write_text(f"{good}\n[1, 2]\n")
    with pytest.raises(DataError, match=r"line 2 holds a list, not a JSON object"):
        data_sources.read_instruction_files({"train": path})
    path.write_text(f"{good}\n{good}\n")
    assert len(data_sources.read_instruction_files({"train": path})["train"]) == 2


def test_rows_that_do_not_fit_the_schema_name_the_split_and_files(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('conversation\n"User: a\nAssistant: b"\n"x","y","z"\n')  # 3 fields in a 1-column file
    with pytest.raises(DataError, match=r"the train split could not be read from .*train\.csv.*"
                                        r"Expected 1 fields in line 3, saw 3.*fix or remove the bad one"):
        data_sources.read_instruction_files({"train": path})


def test_a_csv_with_an_unclosed_quote_names_the_file(tmp_path):
    path = tmp_path / "PoetryFoundationData.csv"
    path.write_text('Title,Poem,Poet,Tags\n"a","one\n"b","two","x",""\n"c",three,"y\n')
    with pytest.raises(DataError, match=r"PoetryFoundationData\.csv could not be read as CSV.*quote"):
        data_sources.read_poems_file(path)


def test_instructions_without_any_assistant_turn_say_how_a_row_must_read():
    from datasets import Dataset

    rows = {s: Dataset.from_dict({"conversation": [f"User: write {i}. Assistant: here" for i in range(3)]})
            for s in data_sources.SPLITS}
    with pytest.raises(DataError, match=r"none of the 3 conversations in the instructions' train split "
                                        r"has an Assistant turn.*'User: <request>\\nAssistant: <poem>'"):
        prepare.prepare_instructions(rows, None, get_profile("tiny").data)  # refused before tokenizing


# ---------------------------------------------------------------- issue 23: one clear line each


def _one_line(capsys_or_text) -> None:
    assert "\n" not in capsys_or_text and "Traceback" not in capsys_or_text


def test_an_empty_split_or_poems_file_says_it_is_empty(tmp_path):
    for name in ("train.jsonl", "train.csv", "PoetryFoundationData.csv", "train.parquet"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataError, match=rf"{name} is empty \(0 bytes\).*copy the file again") as error:
            if name.startswith("Poetry"):
                data_sources.read_poems_file(tmp_path / name)
            else:
                data_sources.read_instruction_files({"train": tmp_path / name})
        _one_line(str(error.value))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_an_unreadable_file_or_folder_is_named_not_answered_with_copy_it_there(tmp_path):
    poems = tmp_path / "PoetryFoundationData.csv"
    poems.write_text("Title,Poem,Poet,Tags\nt,a line,p,x\n")
    poems.chmod(0)
    with pytest.raises(DataError, match=r"PoetryFoundationData\.csv cannot be read \(Permission denied\).*chmod"):
        data_sources.read_poems_file(poems)
    poems.chmod(0o644)
    tmp_path.chmod(0o300)  # not listable
    try:
        with pytest.raises(DataError, match=r"cannot be read \(Permission denied\)") as error:
            data_sources.find_poems_file(tmp_path, "PoetryFoundationData.csv")
        assert "copy the" not in str(error.value)
    finally:
        tmp_path.chmod(0o755)


def test_unreadable_file_as_root_is_still_named(tmp_path, monkeypatch):
    """The same message where the test runs as root (chmod cannot lock root out): a raised EACCES."""
    poems = tmp_path / "PoetryFoundationData.csv"
    poems.write_text("Title,Poem,Poet,Tags\nt,a line,p,x\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))
    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"PoetryFoundationData\.csv cannot be read \(Permission denied\)"):
        data_sources.read_poems_file(poems)
    monkeypatch.undo()

    def walk_denied(top, onerror=None, **kwargs):
        onerror(PermissionError(13, "Permission denied", str(top)))
        return iter(())
    monkeypatch.setattr(data_sources.os, "walk", walk_denied)
    with pytest.raises(DataError, match=r"cannot be read \(Permission denied\).*--data-dir") as error:
        data_sources.find_poems_file(tmp_path, "PoetryFoundationData.csv")
    assert "copy the" not in str(error.value)


def test_a_semicolon_csv_is_named_as_such_not_as_an_unclosed_quote(tmp_path):
    poems = tmp_path / "PoetryFoundationData.csv"
    poems.write_text("Title;Poem;Poet;Tags\nt;a line, with a comma;p;x\n")
    with pytest.raises(DataError, match=r"separates its fields with semicolons.*comma delimited") as error:
        data_sources.read_poems_file(poems)
    assert "quote" not in str(error.value)
    train = tmp_path / "train.csv"
    train.write_text('conversation;id\n"User: a\nAssistant: b";1\n')
    with pytest.raises(DataError, match=r"train\.csv separates its fields with semicolons"):
        data_sources.read_instruction_files({"train": train})


def test_cli_ends_in_one_line_for_an_empty_split_and_a_semicolon_csv(tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "PoetryFoundationData.csv").write_text("Title,Poem,Poet,Tags\nt,a line,p,x\n")
    for split in sources.SPLITS:
        (copy / f"{split}.jsonl").write_text(json.dumps({"conversation": conversation(5)}) + "\n")
    (copy / "train.jsonl").write_bytes(b"")
    env = {**os.environ, "POET_RUNS_DIR": str(tmp_path / "runs")}
    command = [sys.executable, "-m", "utils.pipeline", "--data-dir", str(copy), "--stages", "data"]
    done = subprocess.run(command + ["--run-name", "a"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {copy / 'train.jsonl'} is empty (0 bytes): "
                                                "the copy or download may have failed; copy the file "
                                                "again, or delete it if that split is elsewhere"]
    (copy / "train.jsonl").write_text(json.dumps({"conversation": conversation(5)}) + "\n")
    (copy / "PoetryFoundationData.csv").write_text("Title;Poem;Poet;Tags\nt;a line;p;x\n")
    done = subprocess.run(command + ["--run-name", "b"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "separates its fields with semicolons" in done.stderr and "Traceback" not in done.stderr


def test_a_backup_beside_a_split_is_not_read_and_the_report_lists_the_files(tmp_path):
    copy = hub_layout(tmp_path / "copy")
    shards = copy / "poetry-instructions" / "data"
    (shards / "train-00000-of-00001-0a1b2c3d4e5f6789.parquet").rename(shards / "train.parquet")
    pd.read_parquet(shards / "train.parquet").to_parquet(shards / "train-old.parquet")
    profile = get_profile("tiny").replace(data={"data_dir": copy})
    with pytest.warns(UserWarning, match=r"not read, as no split's file name \(train-old\.parquet\)"):
        files = data_sources.instruction_paths(profile)
    assert [p.name for p in files["train"]] == ["train.parquet"]
    from utils.models.tokenizers import gpt2_tokenizer

    with pytest.warns(UserWarning, match="train-old"):
        report = prepare.prepare_data(profile, gpt2_tokenizer()).report
    assert report["instructions"]["rows_read"]["train"] == 12  # not 24
    assert report["files_read"]["train"] == [str(shards / "train.parquet")]
    assert report["files_read"]["poems"] == [str(copy / "Poetry-Foundation-Poems" / "PoetryFoundationData.csv")]


def test_crlf_conversations_lose_their_carriage_returns_and_empty_answers_are_named():
    prompt, answer = prepare.split_conversation("User: write\r\nAssistant: line one\r\nline two\r\n")
    assert (prompt, answer) == ("User: write\nAssistant:", " line one\nline two")
    reasons = {}
    pairs, dropped = prepare.format_conversations(
        ["User: a\nAssistant:  \n", "User: b", "User: c\nAssistant: d"], reasons)
    assert dropped == 2 and reasons == {"no_assistant": 1, "empty_assistant": 1}
    from datasets import Dataset

    rows = {s: Dataset.from_dict({"conversation": ["User: write\nAssistant:   "] * 3})
            for s in data_sources.SPLITS}
    with pytest.raises(DataError, match=r"none of the 3 conversations in the instructions' train "
                                        r"split has an answer: 3 have an empty Assistant turn, 0 have none"):
        prepare.prepare_instructions(rows, None, get_profile("tiny").data)


def test_dropping_every_contaminated_instruction_names_the_flag_not_an_unwritten_report():
    with pytest.raises(DataError, match=r"--drop-contaminated instructions left the train split "
                                        r"empty.*--drop-contaminated none or poems") as error:
        prepare.check_left_after_drops(["a", "b"], {"train": [], "validation": [("p", "c")],
                                                    "test": [("p", "c")]}, "instructions", {})
    assert "data report" not in str(error.value)
    with pytest.raises(DataError, match=r"--drop-contaminated poems left 0 poem"):
        prepare.check_left_after_drops([], {}, "poems", {})
