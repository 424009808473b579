"""The ingest pipeline: raw catalog + clickstream files -> curated items/events/sessions + rejects.

Elements are chunks of raw records and Arrow tables, never one dict per row:

    files -> ReadRawRecords (chunks of N lines; a Reshuffle spreads them when there are workers)
          -> CleanCatalog: clean each chunk, key rows by hash(item_id) % shards, GroupByKey,
             newest updated_at per item                         -> curated/items (+ the kept ids)
          -> CleanEvents: clean each chunk (kept item ids as a side input), key by hash(user_id)
          -> BuildSessions: GroupByKey, drop duplicate event_ids, derive missing session ids
                                                                -> curated/events, curated/sessions
          -> CollectRejects (per source)                        -> rejects/catalog, rejects/events
          -> WriteDataset: one zstd Parquet file per shard, rows sorted, deterministic names

The logic inside every step lives in `shopllm.ingest`; this module only wires it.
"""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.common import StorageDoFn, single_worker
from shopllm import ingest, schemas, storage
from shopllm.config import IngestConfig

NAMESPACE = "shopllm.ingest"


def count(source: str, name: str, n: int) -> None:
    """Counters are named `<source>.<name>`, e.g. `events.read`, `catalog.rejected.bad_json`."""
    if n:
        Metrics.counter(NAMESPACE, f"{source}.{name}").inc(n)


def open_input(path: str):
    """Raw bytes of an input file; shopllm.ingest.read_chunks gunzips .gz itself. Local files and object
    storage on S3 are read through the storage layer (pyarrow, buffered); any other
    scheme through Beam's FileSystems."""
    if storage.scheme(path) in ("", "s3"):
        return ingest.open_file(path)
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _count_rejects(source: str, rejects: pa.Table) -> None:
    for reason, n in ingest.count_reasons(rejects).items():
        count(source, f"rejected.{reason}", n)


def _reject_pieces(chunk: ingest.Chunk, rejects: pa.Table, shards: int):
    """A chunk's rejects stay one piece (they are few): keyed by the chunk's place, so reruns agree."""
    if rejects.num_rows:
        shard = (chunk.file_index * 7919 + chunk.lines[0]) % shards
        yield beam.pvalue.TaggedOutput("rejects", (shard, rejects))


# ---- reading ------------------------------------------------------------------------------------


class _ReadFileChunks(StorageDoFn):
    def __init__(self, source: str, batch_rows: int):
        super().__init__()
        self.source, self.batch_rows = source, batch_rows

    def process(self, indexed_path):
        file_index, path = indexed_path
        yield from ingest.read_chunks(self.source, path, file_index, self.batch_rows, opener=open_input)


class ReadRawRecords(beam.PTransform):
    """[(file_index, path)] -> Chunks of raw records, spread over workers by a Reshuffle.

    `spread=False` skips the Reshuffle: on a single in-process worker it only costs (every raw byte
    pickled and copied once more), so the chunks go straight on to be cleaned in the same fused stage.
    """

    def __init__(self, source: str, files: list[tuple[int, str]], batch_rows: int, spread: bool = True):
        super().__init__()
        self.source, self.files, self.batch_rows, self.spread = source, files, batch_rows, spread

    def expand(self, pbegin):
        chunks = (
            pbegin
            | "ListFiles" >> beam.Create(self.files)
            | "ReadChunks" >> beam.ParDo(_ReadFileChunks(self.source, self.batch_rows))
        )
        return chunks | "SpreadChunks" >> beam.Reshuffle() if self.spread else chunks


# ---- packing tables for a shuffle ----------------------------------------------------------------


class Packed:
    """A table on its way through a GroupByKey, pickled as zstd-compressed Arrow IPC.

    A shuffle encodes and copies every element several times; text columns shrink 3-4x under
    zstd, which costs far less than copying the plain bytes around.
    """

    __slots__ = ("table",)

    def __init__(self, table: pa.Table):
        self.table = table

    def __reduce__(self):
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=1))
        with pa.ipc.new_stream(sink, self.table.schema, options=options) as writer:
            writer.write_table(self.table)
        return _unpack, (sink.getvalue().to_pybytes(),)


def _unpack(data: bytes) -> Packed:
    return Packed(pa.ipc.open_stream(pa.py_buffer(data)).read_all())


def _pack(shard_table):
    shard, table = shard_table
    return shard, Packed(table)


def _tables(packed) -> list[pa.Table]:
    return [p.table for p in packed]


def _grouped(label: str):
    """Pack (shard, table) pairs, group them by shard."""
    return f"Pack{label}" >> beam.Map(_pack) | f"GroupBy{label}" >> beam.GroupByKey()


# ---- catalog ------------------------------------------------------------------------------------


class _CleanCatalogChunk(beam.DoFn):
    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg

    def process(self, chunk: ingest.Chunk):
        items, rejects = ingest.clean_catalog_chunk(chunk, self.cfg)
        count(ingest.CATALOG, "read", len(chunk))
        _count_rejects(ingest.CATALOG, rejects)
        yield from ingest.split_by_shard(items, ingest.shard_keys(items["item_id"], self.cfg.shards))
        yield from _reject_pieces(chunk, rejects, self.cfg.shards)


def _keep_newest(shard_packed):
    shard, packed = shard_packed
    items, superseded = ingest.keep_newest_versions(ingest.concat(_tables(packed), ingest.ITEMS_WITH_ARRIVAL))
    count(ingest.CATALOG, "deduplicated", superseded)
    count(ingest.CATALOG, "kept", items.num_rows)
    yield shard, items


class CleanCatalog(beam.PTransform):
    """Chunks -> {'items': (shard, ITEMS table sorted by item_id), 'rejects': (shard, REJECTS piece)}.

    Each chunk is cleaned where it lands; rows are keyed by a hash of item_id, so every version of an
    item meets in one shard, where the newest updated_at wins.
    """

    def __init__(self, cfg: IngestConfig):
        super().__init__()
        self.cfg = cfg

    def expand(self, chunks):
        cleaned = chunks | "CleanChunks" >> beam.ParDo(_CleanCatalogChunk(self.cfg)).with_outputs(
            "rejects", main="items"
        )
        items = cleaned.items | _grouped("ItemShard") | "KeepNewestVersion" >> beam.FlatMap(_keep_newest)
        return {"items": items, "rejects": cleaned.rejects}


def _item_ids(shard_items):
    return shard_items[1]["item_id"].combine_chunks()


# ---- events -------------------------------------------------------------------------------------


class _CleanEventsChunk(beam.DoFn):
    def __init__(self, cfg: IngestConfig):
        self.cfg = cfg
        self._known_from, self._known = None, None

    def _known_ids(self, id_arrays):
        if id_arrays is not self._known_from:  # the side input is the same object within a bundle
            arrays = [a.cast(pa.string()) for a in id_arrays]
            self._known = pa.concat_arrays(arrays) if arrays else pa.array([], pa.string())
            self._known_from = id_arrays
        return self._known

    def process(self, chunk: ingest.Chunk, id_arrays):
        events, rejects = ingest.clean_events_chunk(chunk, self._known_ids(id_arrays))
        count(ingest.EVENTS, "read", len(chunk))
        _count_rejects(ingest.EVENTS, rejects)
        yield from ingest.split_by_shard(events, ingest.shard_keys(events["user_id"], self.cfg.shards))
        yield from _reject_pieces(chunk, rejects, self.cfg.shards)


class CleanEvents(beam.PTransform):
    """Chunks (+ the kept catalog item ids as a side input) ->
    {'events': (user shard, EVENTS piece), 'rejects': (shard, REJECTS piece)}."""

    def __init__(self, cfg: IngestConfig, known_item_ids):
        super().__init__()
        self.cfg, self.known_item_ids = cfg, known_item_ids

    def expand(self, chunks):
        cleaned = chunks | "CleanChunks" >> beam.ParDo(
            _CleanEventsChunk(self.cfg), beam.pvalue.AsList(self.known_item_ids)
        ).with_outputs("rejects", main="events")
        return {"events": cleaned.events, "rejects": cleaned.rejects}


class _SessionsOfShard(beam.DoFn):
    def __init__(self, gap_minutes: int):
        self.gap_minutes = gap_minutes

    def process(self, shard_packed):
        shard, packed = shard_packed
        events, duplicates = ingest.drop_duplicate_events(ingest.concat(_tables(packed), schemas.EVENTS))
        events = ingest.assign_sessions(events, self.gap_minutes)
        count(ingest.EVENTS, "deduplicated", duplicates)
        count(ingest.EVENTS, "kept", events.num_rows)
        yield shard, events
        yield beam.pvalue.TaggedOutput("sessions", (shard, ingest.sessions_of(events)))


class BuildSessions(beam.PTransform):
    """(user shard, EVENTS piece) -> {'events': (shard, events with session ids), 'sessions': (shard, SESSIONS)}.

    All of a user's events meet in one shard: duplicate (user, event_id)s are dropped there, then
    missing session ids are derived from the inactivity gap.
    """

    def __init__(self, gap_minutes: int):
        super().__init__()
        self.gap_minutes = gap_minutes

    def expand(self, events):
        out = (
            events
            | _grouped("UserShard")
            | "SessionsPerShard"
            >> beam.ParDo(_SessionsOfShard(self.gap_minutes)).with_outputs("sessions", main="events")
        )
        return {"events": out.events, "sessions": out.sessions}


# ---- rejects and writing ------------------------------------------------------------------------


def _merge_rejects(shard_packed):
    shard, packed = shard_packed
    yield shard, ingest.sort_rejects(ingest.concat(_tables(packed), schemas.REJECTS))


class CollectRejects(beam.PTransform):
    """(shard, REJECTS piece) -> (shard, REJECTS sorted by file, line): one table per shard."""

    def expand(self, pieces):
        return pieces | _grouped("RejectShard") | "SortRejects" >> beam.FlatMap(_merge_rejects)


class _WriteShard(StorageDoFn):
    """Writes each (shard, table) as folder/part-<shard>.parquet through the storage layer (folder: the
    dataset's staging folder, a local path or an attempt prefix on object storage)."""

    def __init__(self, folder: str, schema: pa.Schema):
        super().__init__()
        self.folder, self.schema = folder, schema

    def process(self, shard_table):
        shard, table = shard_table
        if table.num_rows:
            yield storage.write_table(table.cast(self.schema), self.folder, f"part-{shard:05d}.parquet")


class WriteDataset(beam.PTransform):
    """(shard, table) with each shard once -> `folder/part-<shard>.parquet` (zstd); outputs the paths."""

    def __init__(self, folder: str, schema: pa.Schema):
        super().__init__()
        self.folder, self.schema = folder, schema

    def expand(self, shard_tables):
        return shard_tables | "WriteShards" >> beam.ParDo(_WriteShard(self.folder, self.schema))


# ---- the whole stage ----------------------------------------------------------------------------

DATASETS = {
    schemas.CURATED_ITEMS: schemas.ITEMS,
    schemas.CURATED_EVENTS: schemas.EVENTS,
    schemas.CURATED_SESSIONS: schemas.SESSIONS,
    schemas.REJECTS_CATALOG: schemas.REJECTS,
    schemas.REJECTS_EVENTS: schemas.REJECTS,
}


class Ingest(beam.PTransform):
    """The ingest stage: raw catalog and event files -> the five curated and reject datasets, each written
    into its staging folder (`folders` maps each dataset of DATASETS to one)."""

    def __init__(self, catalog_files: list[str], event_files: list[str], folders: dict[str, str], cfg: IngestConfig):
        super().__init__()
        self.catalog_files, self.event_files, self.folders, self.cfg = catalog_files, event_files, folders, cfg

    def expand(self, pbegin):
        cfg = self.cfg
        spread = not single_worker(pbegin.pipeline)
        catalog_chunks = pbegin | "ReadCatalog" >> ReadRawRecords(
            ingest.CATALOG, list(enumerate(self.catalog_files)), cfg.batch_rows, spread
        )
        event_chunks = pbegin | "ReadEvents" >> ReadRawRecords(
            ingest.EVENTS, list(enumerate(self.event_files)), cfg.batch_rows, spread
        )
        catalog = catalog_chunks | "CleanCatalog" >> CleanCatalog(cfg)
        known_ids = catalog["items"] | "KnownItemIds" >> beam.Map(_item_ids)
        events = event_chunks | "CleanEvents" >> CleanEvents(cfg, known_ids)
        sessions = events["events"] | "BuildSessions" >> BuildSessions(cfg.session_gap_minutes)
        outputs = {
            schemas.CURATED_ITEMS: catalog["items"],
            schemas.CURATED_EVENTS: sessions["events"],
            schemas.CURATED_SESSIONS: sessions["sessions"],
            schemas.REJECTS_CATALOG: catalog["rejects"] | "CollectCatalogRejects" >> CollectRejects(),
            schemas.REJECTS_EVENTS: events["rejects"] | "CollectEventRejects" >> CollectRejects(),
        }
        for dataset, pcoll in outputs.items():
            label = "Write" + "".join(part.capitalize() for part in dataset.replace("/", "_").split("_"))
            pcoll | label >> WriteDataset(self.folders[dataset], DATASETS[dataset])
