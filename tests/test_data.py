import json

import pandas as pd
import pytest

from utils.config import get_profile
from utils.data import collate, prepare, sources, tokenize
from utils.data.sources import DataError


def _write_csv(path, rows, columns=("Title", "Poem", "Poet", "Tags")):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=True, lineterminator="\n")
    return path


# ---------------------------------------------------------------- poems


def test_sample_csv_has_the_real_schema_and_quirks():
    raw = sources.load_poems("tiny")
    assert list(raw.columns) == ["Unnamed: 0", "Title", "Poem", "Poet", "Tags"]
    assert raw["Poem"].str.contains("\r\r\n").any()
    assert raw["Title"].str.startswith("\r\r\n ").any()
    assert raw["Tags"].isna().any()


def test_cleaning_fixes_each_quirk(tmp_path):
    rows = [{"Title": "\r\r\n   Tide  \r\r\n ", "Poem": "\r\r\nline one  \r\r\nline two\r\r\n",
             "Poet": " A ", "Tags": None},
            {"Title": "Empty", "Poem": "\r\r\n \r\r\n", "Poet": "B", "Tags": "Love"},
            {"Title": "Copy", "Poem": "line one\nline   two", "Poet": "C", "Tags": "Love"},
            {"Title": "Gaps", "Poem": "a\r\n\r\n\r\n\r\nb", "Poet": "D", "Tags": "Sea"}]
    frame = sources.read_poems_csv(_write_csv(tmp_path / "p.csv", rows))
    clean, report = prepare.clean_poems(frame)
    assert clean["title"].tolist() == ["Tide", "Gaps"]
    assert clean["poem"].tolist() == ["line one\nline two", "a\n\nb"]
    assert clean["tags"].tolist() == ["", "Sea"] and clean["poet"].tolist() == ["A", "D"]
    assert report == {"rows_read": 4, "blank_rows_dropped": 0, "padded_titles_fixed": 1,
                      "missing_tags": 1, "empty_poems_dropped": 1, "duplicates_dropped": 1,
                      "rows_kept": 2}


def _wild_csv(path, poems, blank_rows, trailing_columns):
    """A CSV written by hand the way the real file looks: an unnamed index column, \r\r\n
    breaks inside cells, padded titles, trailing empty columns on every line, blank rows."""
    pad = "," * trailing_columns
    lines = [",Title,Poem,Poet,Tags" + pad]
    for i, (title, poem, poet, tags) in enumerate(poems):
        body = poem.replace("\n", "\r\r\n")
        lines.append(f'{i},"\r\r\n   {title}  \r\r\n ","\r\r\n{body}\r\r\n",{poet},{tags}{pad}')
        if i % 3 == 0 and blank_rows:
            lines.append("," * (4 + trailing_columns))  # a fully blank row between real ones
            blank_rows -= 1
    lines += ["," * (4 + trailing_columns)] * blank_rows
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_report_counts_on_a_csv_as_found_in_the_wild(tmp_path):
    # Invented lines. Missing tags: 3 rows, but one is an empty poem and one a duplicate, so 1 kept.
    poems = [("Kettle Song", "steam climbs the window\nthe kettle hums its one note", "Ivo Marsh", '"Home,Mornings"'),
             ("Gravel", "gravel in the boot\nand a long road after", "Ines Paley", ""),
             ("Nothing Here", "  \n  ", "Ola Brand", ""),
             ("Gravel Again", "Gravel in the boot\nand a   long road after", "Ines Paley", ""),
             ("Lamps", "the lamps come on\none street at a time", "Tor Bell", "Cities"),
             ("Ferry", "the ferry leans\ninto the grey water", "Ada Quill", "Travel")]
    path = _wild_csv(tmp_path / "PoetryFoundationData.csv", poems, blank_rows=7, trailing_columns=300)
    frame = sources.read_poems_csv(path)
    assert list(frame.columns) == ["Unnamed: 0", "Title", "Poem", "Poet", "Tags"]
    clean, report = prepare.clean_poems(frame)
    assert report["rows_read"] == 13 and report["blank_rows_dropped"] == 7
    assert report["empty_columns_dropped"] == 300
    assert report["empty_poems_dropped"] == 1 and report["duplicates_dropped"] == 1
    assert report["rows_kept"] == 4 and report["missing_tags"] == 1
    assert report["padded_titles_fixed"] == 6
    assert clean["title"].tolist() == ["Kettle Song", "Gravel", "Lamps", "Ferry"]
    assert clean["poem"][0] == "steam climbs the window\nthe kettle hums its one note"
    assert clean["tags"].tolist() == ["Home,Mornings", "", "Cities", "Travel"]


def test_missing_column_names_the_column_and_file(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [{"Title": "t", "Poet": "p", "Tags": ""}],
                      columns=("Title", "Poet", "Tags"))
    with pytest.raises(DataError, match=r"bad\.csv.*\['Poem'\]"):
        sources.read_poems_csv(path)


def test_empty_after_cleaning_is_an_error(tmp_path):
    path = _write_csv(tmp_path / "e.csv", [{"Title": "t", "Poem": "  ", "Poet": "p", "Tags": ""}])
    with pytest.raises(DataError, match="no poems left"):
        prepare.clean_poems(sources.read_poems_csv(path))


def test_non_utf8_file_says_how_to_fix(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(",Title,Poem,Poet,Tags\n0,Caf\xe9,x,y,z\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*iconv"):
        sources.read_poems_csv(path)
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes('{"conversation": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        sources.load_instruction_files({"train": jsonl})


# ---------------------------------------------------------------- conversations


def test_split_conversation_at_first_assistant_turn():
    text = "User: Write about rain.\nAssistant: Sure:\nRain falls.\nAssistant: again"
    prompt, completion = prepare.split_conversation(text)
    assert prompt == "User: Write about rain.\nAssistant:"
    assert completion == " Sure:\nRain falls.\nAssistant: again"
    assert prompt + completion == text


@pytest.mark.parametrize("bad", ["User: no answer here", "User: hi\nAssistant:   ", 42])
def test_conversation_without_assistant_turn(bad):
    with pytest.raises(DataError):
        prepare.split_conversation(bad)
    pairs, dropped = prepare.format_conversations(["User: a\nAssistant: b", bad])
    assert pairs == [("User: a\nAssistant:", " b")] and dropped == 1


def test_instruction_files_load_through_datasets_and_check_schema(tmp_path):
    good = tmp_path / "train.jsonl"
    good.write_text(json.dumps({"conversation": "User: a\nAssistant: b"}) + "\n")
    dd = sources.load_instruction_files({"train": good})
    assert dd["train"]["conversation"] == ["User: a\nAssistant: b"]
    bad = tmp_path / "test.jsonl"
    bad.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DataError, match=r"test\.jsonl.*\['conversation'\]"):
        sources.load_instruction_files({"test": bad})


def test_hub_source_without_network_says_what_to_do(monkeypatch):
    import huggingface_hub.constants as c

    from utils.models.hub import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    profile = get_profile("gpt2").replace(data={"poems_dataset": "poet-course/none",
                                                "instructions_dataset": "poet-course/none"})
    with pytest.raises(HubUnavailableError, match="POET_PROFILE=tiny"):
        sources.load_poems(profile)
    with pytest.raises(HubUnavailableError, match="POET_PROFILE=tiny"):
        sources.load_instructions(profile)


# ---------------------------------------------------------------- splits and leakage


def test_split_is_80_20_and_deterministic():
    items = list(range(100))
    train, val = prepare.train_validation_split(items, 0.2, seed=1)
    assert len(train) == 80 and len(val) == 20 and sorted(train + val) == items
    assert prepare.train_validation_split(items, 0.2, seed=1) == (train, val)
    with pytest.raises(DataError, match="at least 2"):
        prepare.train_validation_split([1], 0.2)


def test_leakage_report_and_deduplication():
    splits = {"train": ["a poem", "B  Poem", "c"], "validation": ["d"], "test": ["a poem", "b poem"]}
    report = prepare.leakage_report(splits).set_index(["split_a", "split_b"])
    assert report.loc[("train", "test"), "shared_exact"] == 1
    assert report.loc[("train", "test"), "shared_normalised"] == 2
    assert report.loc[("train", "validation"), "shared_normalised"] == 0
    clean, removed = prepare.deduplicate_splits(splits)
    assert clean["train"] == ["c"] and clean["test"] == ["a poem", "b poem"]
    assert removed == {"test": 0, "validation": 0, "train": 2}


# ---------------------------------------------------------------- tokenizing


def test_labels_mask_prompt_and_keep_eos_gpt2(gpt2_tok):
    row = tokenize.encode_example("User: hi\nAssistant:", " Sure", gpt2_tok, max_length=32)
    prompt_len = len(gpt2_tok("User: hi\nAssistant:")["input_ids"])
    assert row["input_ids"][-1] == gpt2_tok.eos_token_id  # EOS appended...
    assert gpt2_tok.decode(row["input_ids"][prompt_len:-1]) == " Sure\n"  # after the answer's newline
    assert row["labels"][-1] == gpt2_tok.eos_token_id  # ...and counted in the loss
    assert row["labels"][:prompt_len] == [-100] * prompt_len
    assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:]
    assert row["input_ids"][0] != gpt2_tok.bos_token_id or gpt2_tok.bos_token_id == gpt2_tok.eos_token_id


def test_labels_with_bos_tokenizer(llama_tok):
    row = tokenize.encode_example("User: hi\nAssistant:", " Sure", llama_tok, max_length=32)
    assert row["input_ids"][0] == llama_tok.bos_token_id and row["labels"][0] == -100
    assert row["input_ids"].count(llama_tok.bos_token_id) == 1  # no BOS before the completion
    assert row["labels"][-1] == llama_tok.eos_token_id == llama_tok.pad_token_id


def test_over_long_rows(gpt2_tok):
    with pytest.raises(DataError, match="prompt has .* tokens but max_length is 8"):
        tokenize.encode_example("word " * 20, " x", gpt2_tok, max_length=8)
    with pytest.raises(DataError, match="more than max_length"):
        tokenize.encode_example("hi", " word" * 20, gpt2_tok, max_length=8)
    kept, dropped = tokenize.filter_by_length([("hi", " a"), ("hi", " a" * 50)], gpt2_tok, 16)
    assert kept == [("hi", " a")] and dropped == 1


def test_collator_pads_dynamically_and_masks_padding(gpt2_tok):
    rows = [tokenize.encode_example("Q:", " a b", gpt2_tok, 32), tokenize.encode_example("Q:", " a", gpt2_tok, 32)]
    batch = collate.SFTCollator(pad_token_id=gpt2_tok.pad_token_id)(rows)
    assert batch["input_ids"].shape == (2, len(rows[0]["input_ids"]))
    assert batch["attention_mask"][1].tolist() == [1] * len(rows[1]["input_ids"]) + [0]
    assert batch["labels"][1, -1].item() == -100
    # The real EOS of row 1 is still a label even though it equals the pad id.
    assert batch["labels"][1, len(rows[1]["input_ids"]) - 1].item() == gpt2_tok.eos_token_id
    assert collate.padding_share(batch) == pytest.approx(1 / batch["input_ids"].numel())


def test_group_texts_drops_only_the_remainder():
    blocks = tokenize.group_texts([[1, 2, 3], [4, 5]], block_size=2, eos_token_id=0)
    assert blocks == [[1, 2], [3, 0], [4, 5]]  # the stream 1 2 3 0 4 5 0: the last 0 is dropped


def test_prepare_data_on_the_sample(tiny_profile):
    from utils.models.tokenizers import load_tokenizer

    prepared = prepare.prepare_data(tiny_profile, load_tokenizer(tiny_profile))
    rep = prepared.report
    assert rep["poems"]["rows_kept"] == 168 and rep["poems"]["empty_poems_dropped"] == 2
    assert rep["poems"]["duplicates_dropped"] == 3
    leak = {(r["split_a"], r["split_b"]): r for r in rep["instructions"]["leakage"]}
    assert leak[("train", "test")]["shared_normalised"] > leak[("train", "test")]["shared_exact"] > 0
    assert sum(rep["instructions"]["over_max_length_dropped"].values()) >= 2  # the huge rows
    after = prepare.leakage_report(prepared.instructions)
    assert after["shared_normalised"].sum() == 0
    assert all(len(prepared.instructions[s]) for s in ("train", "validation", "test"))


def test_pipeline_data_stage_writes_report(tmp_path, capsys):
    from utils.pipeline import job

    ctx = job.main(["--stages", "data", "--runs-dir", str(tmp_path), "--run-name", "d"])
    saved = json.loads((tmp_path / "d" / "data_report.json").read_text())
    assert saved["poems"]["rows_kept"] == 168
    assert "leakage train/test" in capsys.readouterr().out
    assert ctx.inputs.data.instructions["train"]


def test_pipeline_unknown_stage():
    from utils import options

    with pytest.raises(ValueError, match="unknown stage 'trian'; valid stages: data"):
        options.check_stages("data,trian")
