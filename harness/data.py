"""Dataset sources: local json/jsonl/csv/tsv/parquet/txt files, and Hugging Face datasets."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from harness.config import TaskConfig
from harness.errors import HarnessError

LOCAL_BUILDERS = {"json", "csv", "tsv", "parquet", "text", "txt"}
DATA_DIR_ENV = "HARNESS_DATA_DIR"

Doc = dict[str, Any]


def load_split(config: TaskConfig, split: str | None, *, data_dir: str | None = None, allow_external: bool = False) -> list[Doc]:
    """The documents of one split of a task's dataset.

    Local files (`dataset_path: json|csv|...` or `dataset_kwargs.data_files`) must lie inside the
    task's folder or the data folder unless `allow_external` (a model behind an API would
    otherwise receive any readable file). A hub dataset comes from a local copy when one exists
    (see `local_copy_paths`), else from the hub."""
    builder = config.dataset_path
    files = config.dataset_kwargs.get("data_files")
    if builder in LOCAL_BUILDERS or files is not None:
        return _load_local(config, builder or "json", files, split, data_dir=data_dir, allow_external=allow_external)
    local = _local_override(config, data_dir, split)
    if local is not None:
        return _load_local(config, "json", {split or "test": str(local)}, split or "test", data_dir=data_dir, allow_external=True)
    if not allow_external and config.dataset_path and Path(os.path.expanduser(config.dataset_path)).exists():
        # a local folder handed to `datasets`: the same containment as data_files
        _check_inside(config, Path(os.path.expanduser(config.dataset_path)), data_dir, key="dataset_path")
    return _load_hub(config, split, data_dir)


def is_local(config: TaskConfig, data_dir: str | None = None) -> bool:
    """True when the task's documents come from local files (never the hub)."""
    if config.dataset_path in LOCAL_BUILDERS or config.dataset_kwargs.get("data_files") is not None:
        return True
    split = config.test_split or config.validation_split
    return _local_override(config, data_dir, split) is not None


def _resolve(config: TaskConfig, name: str) -> Path:
    """A data path: absolute, else relative to the task file, else relative to the working directory."""
    path = Path(os.path.expanduser(name))
    if path.is_absolute():
        return path
    beside = config.base_dir / path
    return beside if beside.exists() or not path.exists() else path


def _split_files(config: TaskConfig, files: Any, split: str | None) -> list[Path]:
    where = f"{config.source_file}: dataset_kwargs.data_files"
    if isinstance(files, dict):
        if split is None:
            split = next(iter(files))
        if split not in files:
            raise HarnessError(f"{where} has no split {split!r} (it has {', '.join(files)}); fix test_split")
        files = files[split]
    elif split not in (None, "train"):
        raise HarnessError(
            f"{where} is a single file, which forms the split 'train'; set test_split: train (not {split!r})"
        )
    names = [files] if isinstance(files, str) else files
    if not isinstance(names, list) or not names:
        raise HarnessError(f"{where} must be a path, a list of paths or a mapping of split to paths")
    return [_resolve(config, str(n)) for n in names]


def _load_local(config: TaskConfig, builder: str, files: Any, split: str | None, *,
                data_dir: str | None = None, allow_external: bool = False) -> list[Doc]:
    if files is None:
        raise HarnessError(f"{config.source_file}: dataset_path {builder!r} needs dataset_kwargs.data_files")
    docs: list[Doc] = []
    for path in _split_files(config, files, split):
        if not allow_external:
            _check_inside(config, path, data_dir)
        if not path.is_file():
            raise HarnessError(
                f"{config.source_file}: data file {path} does not exist; fix dataset_kwargs.data_files"
            )
        docs.extend(read_records(path, builder))
    if not docs:
        raise HarnessError(f"{config.source_file}: the dataset is empty; add documents to its data file")
    return docs


def read_delimited(path: Path, delimiter: str = ",") -> list[Doc]:
    """Rows of a CSV/TSV file with a header line, as dicts. Strict: a row with more or fewer cells
    than the header, or a quote that is never closed, is an error naming the line (a missing cell
    would otherwise be scored as the text "None", and an open quote swallows the rest of the file)."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, strict=True)
        start = 1  # the line the row being read starts on (a quoted cell may span lines)
        try:
            header = next(reader, None)
            if header is None:
                return []
            if len(set(header)) != len(header) or any(not name.strip() for name in header):
                raise HarnessError(f"{path}: line 1: the header needs distinct, non-empty column names; "
                                   f"got {header}")
            rows = []
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    raise HarnessError(
                        f"{path}: line {start}: {len(row)} cell(s) where the header has {len(header)} "
                        f"({', '.join(header)}); fix that row (quote cells that contain '{delimiter}')")
                if row:
                    rows.append(dict(zip(header, row)))
                start = reader.line_num + 1
        except csv.Error as err:
            raise HarnessError(f"{path}: line {start}: {err} (a quote is not closed, or text follows a "
                               "closing quote); fix the quoting of that row") from None
    return rows


def read_records(path: Path, builder: str = "json") -> list[Doc]:
    """Records of one local file; the format comes from the builder name or the file suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet" or builder == "parquet":
            try:
                import pyarrow.parquet as pq
            except ModuleNotFoundError:
                raise HarnessError(f"{path}: reading parquet needs pyarrow; pip install pyarrow") from None
            return pq.read_table(path).to_pylist()
        if suffix in (".csv", ".tsv") or builder in ("csv", "tsv"):
            delimiter = "\t" if suffix == ".tsv" or builder == "tsv" else ","
            return read_delimited(path, delimiter)
        if suffix == ".txt" or builder in ("text", "txt"):
            lines = path.read_text(encoding="utf-8").splitlines()
            return [{"text": line} for line in lines if line.strip()]
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            records = json.loads(text)
        elif suffix == ".json" and text.lstrip().startswith("{") and '"data"' in text[:200]:
            records = json.loads(text)["data"]
        else:
            records = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise HarnessError(f"{path}: line {n}: invalid JSON ({err.msg}); fix that line") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise HarnessError(f"{path}: invalid JSON ({err.msg} at line {err.lineno}); fix the file") from None
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise HarnessError(f"{path}: record {bad + 1} is not an object with named fields")
    return records


def _check_inside(config: TaskConfig, path: Path, data_dir: str | None, key: str = "dataset_kwargs.data_files") -> None:
    roots = [config.base_dir.resolve()]
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if root:
        roots.append(Path(root).expanduser().resolve())
    real = path.resolve()
    if not any(real == r or r in real.parents for r in roots):
        raise HarnessError(
            f"{config.source_file}: {key} names {path}, outside the task's folder and the data folder; "
            "move the file there, or allow it explicitly (--allow-external-data, allow_external_data=True)"
        )


def local_copy_paths(config: TaskConfig, root: Path, split: str | None) -> list[Path]:
    """Where a local copy of a hub dataset's split may lie, in order: DATA_DIR/<task>/<split>.jsonl,
    then DATA_DIR/<dataset_path>/<dataset_name or 'default'>/<split>.jsonl (the hub's names)."""
    split = split or "test"
    hub = root / str(config.dataset_path) / (config.dataset_name or "default")
    return [root / config.task / f"{split}.jsonl", hub / f"{split}.jsonl"]


def _local_override(config: TaskConfig, data_dir: str | None, split: str | None) -> Path | None:
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if not root or not config.dataset_path:
        return None
    paths = local_copy_paths(config, Path(root).expanduser(), split)
    for path in paths:
        if path.is_file():
            return path
    for path in paths:
        if path.parent.is_dir():  # a local copy with this split missing
            raise HarnessError(
                f"task {config.task}: {path} does not exist; put the hub's {split or 'test'} split there as JSON lines"
            )
    return None


def _load_hub(config: TaskConfig, split: str | None, data_dir: str | None = None) -> list[Doc]:
    name = f"{config.dataset_path}" + (f" ({config.dataset_name})" if config.dataset_name else "")
    root = data_dir or os.environ.get(DATA_DIR_ENV) or "DATA_DIR"
    by_task, by_hub = local_copy_paths(config, Path(root), split)
    fix = (
        f"download it while online, or put its {split or 'test'} split (the hub's fields, one JSON object per line) "
        f"in {by_hub} (or {by_task}) and pass --data-dir {root} (or set {DATA_DIR_ENV})"
    )
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise HarnessError(f"task {config.task}: dataset {name} is on the Hugging Face hub, which is offline; {fix}")
    try:
        import datasets
    except ModuleNotFoundError:
        raise HarnessError(
            f"task {config.task}: dataset {name} is on the Hugging Face hub; pip install datasets, or {fix}"
        ) from None
    kwargs = dict(config.dataset_kwargs)
    if config.dataset_revision and "revision" not in kwargs:
        kwargs["revision"] = config.dataset_revision
    try:
        ds = datasets.load_dataset(config.dataset_path, config.dataset_name, split=split, **kwargs)
    except Exception as err:  # noqa: BLE001 - any failure to fetch becomes one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HarnessError(f"task {config.task}: dataset {name} could not be loaded ({first}); {fix}") from None
    return [dict(r) for r in ds]


def local_split_path(folder: Path, split: str | None) -> Path:
    return folder / f"{split or 'test'}.jsonl"


def docs_hash(docs: list[Doc]) -> str:
    """Content hash of the documents evaluated (order included)."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(json.dumps(doc, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
