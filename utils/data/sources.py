"""Reading the two datasets from files: one reader for data/sample, a local copy and the hub.

Parquet, JSON lines and CSV are told apart by the file's extension. The hub path downloads
the dataset repositories (snapshot) and then reads them with exactly the same functions as a
local folder, so both get the same cleaning and the same report. Introduced in notebook 05.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import pandas as pd

from utils.config import DataConfig, Profile, get_profile

POEM_COLUMNS = ("Title", "Poem", "Poet", "Tags")
CONVERSATION_COLUMN = "conversation"
SPLITS = ("train", "validation", "test")
# extension -> the `datasets` builder that reads it
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
SUPPORTED = ", ".join(FORMATS)


class DataError(ValueError):
    """Bad or unusable data; the message names the file, column or row and the fix."""


def data_format(path: str | Path) -> str:
    """The builder name of a data file ('parquet', 'json', 'csv') from its extension, or DataError."""
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported data file type {path.suffix or '(no extension)'!r}; "
                        f"supported: {SUPPORTED}. Convert it, e.g. with pandas "
                        "(`pd.read_...(...).to_parquet('train.parquet')`).")
    return kind


def read_bytes(path: str | Path) -> bytes:
    """A data file's bytes; DataError naming the file when it cannot be read or holds nothing."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (PermissionError, IsADirectoryError) as error:
        raise DataError(f"{path} cannot be read ({error.strerror}); give yourself read access "
                        f"(e.g. `chmod u+r {path.name}`) or copy it to a folder you own") from None
    if not raw.strip():
        raise DataError(f"{path} is empty ({len(raw)} bytes): the copy or download may have "
                        "failed; copy the file again, or delete it if that split is elsewhere")
    return raw


def read_text_file(path: str | Path) -> str:
    """A text file (CSV, JSON lines) as strict UTF-8, with an error that says how to fix it."""
    path = Path(path)
    raw = read_bytes(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path} is not UTF-8 text (invalid byte at position {error.start}). Re-save it as "
            f"UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`.") from None


def check_parquet(path: str | Path) -> None:
    """A parquet file starts and ends with the magic bytes PAR1; anything else is not one."""
    path = Path(path)
    read_bytes(path)  # unreadable or 0 bytes: say so before the magic-byte check
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, path.stat().st_size - 4))
        tail = handle.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise DataError(f"{path} is not a valid parquet file (no PAR1 marker at both ends): the "
                        "download may be cut short or a Git LFS pointer; download it again.")


def check_json_lines(path: str | Path, text: str) -> None:
    """Every non-blank line of a .jsonl file is one JSON object, or DataError naming the line."""
    import json

    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {number} is not valid JSON ({error.msg}, column "
                            f"{error.colno}): {line[:60]!r}. Each line must be one object such as "
                            '{"conversation": "User: ...\\nAssistant: ..."}; fix or delete that line.'
                            ) from None
        if not isinstance(row, dict):
            raise DataError(f"{path}, line {number} holds a {type(row).__name__}, not a JSON "
                            "object with named columns; fix or delete that line.")


def check_readable(path: str | Path) -> str:
    """Check a data file before a library parses it (clear errors); returns its format."""
    kind = data_format(path)
    if kind == "parquet":
        check_parquet(path)
    else:
        text = read_text_file(path)  # decode first: pandas' and datasets' errors on bad bytes are cryptic
        if Path(path).suffix.lower() == ".jsonl":
            check_json_lines(path, text)
    return kind


def check_separator(path: str | Path, header: str) -> None:
    """DataError for a CSV whose header is split by ';' or tabs (a European-locale Excel save)."""
    for name, sep in (("semicolons (;)", ";"), ("tabs", "\t")):
        if sep in header and "," not in header:
            raise DataError(f"{path} separates its fields with {name}, not commas (header "
                            f"{header[:60]!r}). Save it again as 'CSV UTF-8 (comma delimited)', "
                            f"or convert it: pd.read_csv(path, sep={sep!r}).to_csv(path, index=False)")


def read_csv_text(path: str | Path) -> pd.DataFrame:
    """A CSV file as a frame; a parse error names the file, its likely cause and the fix."""
    text = read_text_file(path)
    check_separator(path, text.lstrip("\ufeff").split("\n", 1)[0])
    try:
        return pd.read_csv(io.StringIO(text), keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path} could not be read as CSV ({str(error).strip()}). "
                        f"{csv_error_hint(str(error))}") from None


def csv_error_hint(message: str) -> str:
    """The fix for pandas' CSV error: an unclosed quote only where pandas says so."""
    if "EOF inside string" in message or "EOF" in message and "quote" in message:
        return ("A quote (\") opened in a field and never closed is the cause: open the file in "
                "a spreadsheet, fix that row and save it as CSV (UTF-8).")
    if "Expected" in message and "fields" in message:
        return ("A row has more fields than the header: a comma inside a field that is not "
                "quoted, usually. Quote that field, or fix the row, and save it as CSV (UTF-8).")
    return "Open it in a spreadsheet, check the row named above and save it as CSV (UTF-8)."


def require_columns(columns, required, source) -> None:
    """Raise DataError naming every required column that `source` lacks."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{source} lacks the required column(s) {missing}; "
                        f"found {list(columns)[:12]}")


def drop_empty_unnamed_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop 'Unnamed: N' columns that hold nothing: trailing commas in the real CSV make hundreds."""
    empty = [c for c in frame.columns if str(c).startswith("Unnamed:") and frame[c].isna().all()]
    out = frame.drop(columns=empty)
    out.attrs["empty_columns_dropped"] = len(empty)
    return out


def read_poems_file(path: str | Path) -> pd.DataFrame:
    """Raw rows of a poems file in the Poetry Foundation schema (Title, Poem, Poet, Tags)."""
    kind = check_readable(path)
    if kind == "csv":
        frame = read_csv_text(path)
    elif kind == "parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_json(path, lines=Path(path).suffix.lower() == ".jsonl")
    require_columns(frame.columns, POEM_COLUMNS, path)
    return drop_empty_unnamed_columns(frame)


read_poems_csv = read_poems_file  # the older name, kept for notebooks written against it


def read_instruction_files(files: dict) -> "datasets.DatasetDict":  # noqa: F821
    """Instruction splits from local files ({split: path or [paths]}), checking the schema."""
    import datasets

    out = {}
    for split, paths in files.items():
        paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
        kinds = {check_readable(p) for p in paths}
        for path in paths:  # datasets would read a ';' file as one column and blame the schema
            if path.suffix.lower() == ".csv":
                check_separator(path, read_text_file(path).lstrip("\ufeff").split("\n", 1)[0])
        if len(kinds) > 1:
            raise DataError(f"split {split!r} mixes file types {sorted(kinds)}: {paths}; use one")
        try:
            ds = datasets.load_dataset(kinds.pop(), data_files={split: [str(p) for p in paths]})[split]
        except datasets.exceptions.DatasetGenerationError as error:  # a malformed row, mostly
            raise DataError(f"the {split} split could not be read from {[str(p) for p in paths]}: "
                            f"{str(error.__cause__ or error).strip()}. Check the file's rows against the "
                            f"schema (one '{CONVERSATION_COLUMN}' column) and fix or remove the "
                            "bad one.") from None
        require_columns(ds.column_names, [CONVERSATION_COLUMN], paths[0])
        out[split] = ds
    return datasets.DatasetDict(out)


load_instruction_files = read_instruction_files  # the older name


# ---------------------------------------------------------------- finding files in a folder


def _data_files(folder: Path) -> list[Path]:
    """Every visible file under folder; DataError naming a folder that cannot be listed (a
    folder without read permission would otherwise look empty, and be answered 'copy it there')."""
    def unreadable(error: OSError):
        if isinstance(error, FileNotFoundError):
            raise DataError(f"{error.filename} does not exist; check --data-dir (the folder "
                            "holding both datasets' files)") from None
        raise DataError(f"{error.filename} cannot be read ({error.strerror}); give yourself read "
                        f"access (e.g. `chmod -R u+rX {error.filename}`) or point --data-dir at a "
                        "copy you own") from None

    found = []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root) / n for n in names if not n.startswith(".")]
    return sorted(found)


def find_poems_file(folder: str | Path, poems_file: str) -> Path:
    """The poems file in a folder (any depth): `poems_file`, or the same name as parquet/jsonl."""
    folder = Path(folder)
    stem = Path(poems_file).stem
    found = [p for p in _data_files(folder) if p.stem == stem]
    supported = [p for p in found if p.suffix.lower() in FORMATS]
    exact = [p for p in supported if p.name == poems_file]
    if exact or supported:
        return (exact or supported)[0]
    if found:
        data_format(found[0])  # raises: names the unsupported type and the supported ones
    raise DataError(f"no poems file {stem}.csv/.parquet/.jsonl under {folder}; copy the "
                    f"Poetry Foundation file there (the hub's name is {poems_file})")


def _split_of(path: Path) -> str | None:
    # Hub layouts: data/train-00000-of-00001-<hash>.parquet, default/train/0000.parquet;
    # the sample's: poetry-instructions/train.jsonl.
    # One pattern per layout, so a backup beside them (train-old.jsonl, train copy.jsonl) is
    # never read as a second half of the split.
    name = path.stem.lower()
    for split in SPLITS:
        if name == split or re.fullmatch(rf"{split}-\d+-of-\d+(-[0-9a-f]+)?", name):
            return split
        if path.parent.name.lower() == split and name.isdigit():
            return split
    return None


def _looks_like_a_split(path: Path) -> bool:
    return any(path.stem.lower().startswith(split) for split in SPLITS)


def find_instruction_files(folder: str | Path, exclude: Path | None = None) -> dict[str, list[Path]]:
    """{split: files} of the instruction splits in a folder (hub or sample layout), or DataError."""
    folder = Path(folder)
    files: dict[str, list[Path]] = {}
    ignored = []
    for path in _data_files(folder):
        split = _split_of(path)
        if split and path != exclude and path.suffix.lower() not in (".md", ".txt"):
            files.setdefault(split, []).append(path)
        elif path != exclude and _looks_like_a_split(path) and path.suffix.lower() in FORMATS:
            ignored.append(path.name)
    if ignored:
        warnings.warn(f"{folder}: not read, as no split's file name ({', '.join(ignored)}); a "
                      "split is read from <split>.<ext> or <split>-00000-of-00001.<ext> only",
                      stacklevel=2)
    for paths in files.values():
        for path in paths:
            data_format(path)  # a train.xlsx gets an error naming the supported types
    missing = [s for s in SPLITS if s not in files]
    if missing:
        raise DataError(f"no instruction file for split(s) {missing} under {folder}; expected "
                        f"e.g. train.jsonl or data/train-00000-of-00001.parquet ({SUPPORTED})")
    return {s: files[s] for s in SPLITS}


# ---------------------------------------------------------------- where a profile reads from


def hub_snapshot(repo_id: str, patterns: list[str]) -> Path:
    """Download (or find in the cache) a dataset repository's data files; HubUnavailableError offline."""
    from huggingface_hub import snapshot_download

    from utils.models.hub import HUB_HELP, HubUnavailableError

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns))
    except Exception as error:  # network, offline mode, gated repo: all end the same way
        raise HubUnavailableError(HUB_HELP.format(what=repo_id, error=error)
                                  + " Or pass --data-dir with local copies of both datasets.") from error


def poems_path(profile: Profile | str | None = None) -> Path:
    """The poems file a profile reads: in data/sample, a local --data-dir copy, or the hub's."""
    data = get_profile(profile).data
    folder, _ = data_folders_for("poems", data)
    return find_poems_file(folder, data.poems_file)


def instruction_paths(profile: Profile | str | None = None) -> dict[str, list[Path]]:
    """{split: files} a profile reads its instructions from (the data report lists them)."""
    data = get_profile(profile).data
    folder, poems_folder = data_folders_for("instructions", data)
    exclude = None
    if folder == poems_folder:  # one folder holds both: never read the poems file as a split
        exclude = find_poems_file(folder, data.poems_file)
    return find_instruction_files(folder, exclude)


def load_poems(profile: Profile | str | None = None) -> pd.DataFrame:
    """Raw poems of a profile: data/sample, a local --data-dir copy, or the hub's CSV."""
    return read_poems_file(poems_path(profile))


def load_instructions(profile: Profile | str | None = None):
    """Poetry instructions as a datasets.DatasetDict (train/validation/test, `conversation`)."""
    return read_instruction_files(instruction_paths(profile))


def data_folders_for(which: str, data: DataConfig) -> tuple[Path, Path | None]:
    """(folder of `which` dataset, the poems folder if it is the same place): downloads one repo only."""
    if data.data_dir is not None or data.source == "sample":
        folder = Path(data.data_dir) if data.data_dir is not None else data.sample_dir
        return folder, folder
    if which == "poems":
        return hub_snapshot(data.poems_dataset, [data.poems_file]), None
    return hub_snapshot(data.instructions_dataset, ["*.parquet", "*.jsonl", "*.csv"]), None


# ---------------------------------------------------------------- the sample in the hub's layout


def write_hub_layout(poems_dir: str | Path, instructions_dir: str | Path,
                     data: DataConfig | None = None) -> dict[str, Path]:
    """Copy data/sample into the two hub repositories' file layouts; returns {name: path}.

    Poems: the CSV at the repository's root, as on the hub. Instructions: one parquet shard
    per split, `data/<split>-00000-of-00001.parquet`, the hub's shard naming. A rehearsal
    (utils/pipeline/rehearsal.py) and the stand-in hub cache of tests/test_rehearse.py read
    these through the hub path's own readers. Introduced in notebook 11.
    """
    data = data or DataConfig()
    poems_dir, instructions_dir = Path(poems_dir), Path(instructions_dir)
    written = {"poems": poems_dir / data.poems_file}
    poems_dir.mkdir(parents=True, exist_ok=True)
    written["poems"].write_bytes((data.sample_dir / data.poems_file).read_bytes())
    samples = find_instruction_files(data.sample_dir, exclude=data.sample_dir / data.poems_file)
    for split, paths in samples.items():
        frame = pd.concat([pd.read_json(p, lines=True) for p in paths], ignore_index=True)
        written[split] = instructions_dir / "data" / f"{split}-00000-of-00001.parquet"
        written[split].parent.mkdir(parents=True, exist_ok=True)
        frame[[CONVERSATION_COLUMN]].to_parquet(written[split], index=False)
    return written
