"""Partitions under `--out`: where they live, how they are published atomically, how they are read.

A partition `<dataset>/dt=D/` is written into a staging folder beside it, gets its `_SUCCESS`
marker there, and is then renamed into place (a rename is atomic on one filesystem). A rerun of the
same date replaces the old partition whole. Readers only trust partitions that have `_SUCCESS`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shopllm.errors import ShopllmError

SUCCESS = "_SUCCESS"
STAGING_PREFIX = "_staging-"


class OutputError(ShopllmError):
    """The output directory cannot be written."""


def partition_dir(out: str | os.PathLike, dataset: str, date: str) -> Path:
    return Path(out) / dataset / f"dt={date}"


def is_published(path: str | os.PathLike) -> bool:
    return (Path(path) / SUCCESS).exists()


def check_writable(out: str | os.PathLike) -> Path:
    """Create `out` if needed and prove we can write there; raise OutputError with one clear line."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{uuid.uuid4().hex}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise OutputError(f"cannot write to --out {out}: {e.strerror or e}") from None
    return out


def staging_dir(out: str | os.PathLike, dataset: str, date: str) -> Path:
    """A fresh folder beside the final partition (same filesystem, so the final rename is atomic)."""
    final = partition_dir(out, dataset, date)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{STAGING_PREFIX}dt={date}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def publish(tmp: Path, out: str | os.PathLike, dataset: str, date: str) -> Path:
    """Mark `tmp` complete and move it into place as `<dataset>/dt=date`, replacing any old one."""
    (tmp / SUCCESS).write_text("")
    return replace_dir(tmp, partition_dir(out, dataset, date))


def replace_dir(tmp: Path, final: Path) -> Path:
    """Move the finished folder `tmp` to `final`, replacing an older one whole (renames on one filesystem)."""
    old = None
    if final.exists():
        old = final.parent / f"{STAGING_PREFIX}old-{final.name}-{uuid.uuid4().hex[:8]}"
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def publishing(out: str | os.PathLike, dataset: str, date: str) -> Iterator[Path]:
    """`with publishing(out, ds, d) as tmp:` write files into tmp; published only if the block succeeds."""
    with publishing_together(out, date, {dataset: None}) as folders:
        yield folders[dataset]


@contextlib.contextmanager
def publishing_together(
    out: str | os.PathLike, date: str, schemas: dict[str, pa.Schema | None]
) -> Iterator[dict[str, Path]]:
    """`with publishing_together(out, d, {dataset: schema}) as folders:` write each dataset's files into
    folders[dataset]; when the block succeeds every dataset is published for date d (one with a schema and
    no Parquet file gets a schema-only one: an empty partition is still readable and typed); when it fails,
    none is."""
    folders = {dataset: staging_dir(out, dataset, date) for dataset in schemas}
    try:
        yield folders
        for dataset, folder in folders.items():
            if schemas[dataset] is not None and not any(folder.glob("*.parquet")):
                write_table(schemas[dataset].empty_table(), folder)
    except BaseException:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise
    for dataset, folder in folders.items():
        publish(folder, out, dataset, date)


def clean_staging(out: str | os.PathLike) -> int:
    """Remove staging folders left by killed runs; returns how many were removed."""
    n = 0
    for p in Path(out).glob(f"**/{STAGING_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def write_table(table: pa.Table, folder: Path, name: str = "part-00000.parquet", dictionary: bool = True) -> Path:
    """folder/name as zstd Parquet; `dictionary=False` leaves dictionary encoding out (for columns of many
    distinct values, such as token id lists, zstd alone is smaller and faster to write)."""
    path = Path(folder) / name
    pq.write_table(table, path, compression="zstd", use_dictionary=dictionary)
    return path


def read_partition(out: str | os.PathLike, dataset: str, date: str, schema: pa.Schema | None = None) -> pa.Table:
    """Read a published partition whole; raise FileNotFoundError with the path if it is not published."""
    folder = partition_dir(out, dataset, date)
    if not is_published(folder):
        raise FileNotFoundError(f"{folder} is not published (no {SUCCESS}); run the stage that writes it first")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        return (schema or pa.schema([])).empty_table()
    tables = [pq.read_table(f, schema=schema) for f in files]
    return pa.concat_tables(tables)


def read_columns(files: Sequence[str], columns: Sequence[str], dictionary: Sequence[str] = ()) -> pa.Table | None:
    """The columns of Parquet files as one table, rows in file order (those named in `dictionary` left
    dictionary-encoded); None without files. One Arrow read decodes the files in parallel (~40% less CPU
    than file by file through Python file objects)."""
    if not files:
        return None
    return pq.read_table(list(files), columns=list(columns), partitioning=None, read_dictionary=list(dictionary))


def partition_files(out: str | os.PathLike, dataset: str, date: str) -> list[str]:
    folder = partition_dir(out, dataset, date)
    if not is_published(folder):
        raise FileNotFoundError(f"{folder} is not published (no {SUCCESS}); run the stage that writes it first")
    return [str(f) for f in sorted(folder.glob("*.parquet"))]


def published_dates(out: str | os.PathLike, dataset: str) -> list[str]:
    base = Path(out) / dataset
    if not base.is_dir():
        return []
    return sorted(p.name[3:] for p in base.glob("dt=*") if is_published(p))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str))
    tmp.replace(path)


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def summary_path(out: str | os.PathLike, date: str, stage: str) -> Path:
    from shopllm.schemas import SUMMARIES

    return Path(out) / SUMMARIES / f"dt={date}" / f"{stage}.json"
