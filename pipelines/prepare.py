"""The prepare pipeline: the night's curated files -> token shards of tokens/{train,valid,test}/dt=D.

`jobs.prepare.run_prepare` trains or loads the tokenizer, extends the item vocabulary, runs `Prepare` and
publishes the splits. Workers get the tokenizer and the item vocabulary as paths or URIs under `--out` and
load them once in `setup()`; every file is read and written through `shopllm.storage`, whose options (the
S3 endpoint and keys) travel with each DoFn (`pipelines.common.StorageDoFn`), so on a distributed runner
`--out` is object storage (or a filesystem every worker sees).

    curated/items + curated/events --ReadCurated--> (source, table) per READ_FILES files
      --BuildExamples: ShardInputs (events by user shard, items in slices) -> GroupInputs -> BuildShardExamples
        --> ((split, sort group), rows): history + search rows of a user shard, describe rows of an item slice
      --WriteShards: GroupSortGroups -> SortAndCut -> GroupShards -> WriteShard--> part-NNNNN.parquet

A shuffle copies everything it moves several times, so there are only those the work needs. Both datasets
come from one read step (a Flatten of two branches would be a stage of its own); the row counts that place
the shard boundaries are taken before the sort (a side input), so sorting and cutting are one step.

One shape on every runner: on one in-process worker (the default) a hand-tuned single-step shape was no
faster relative to the plain encode baseline on the x12 benchmark (0.49-0.53 against 0.50), so it went.

Elements are Arrow tables (one per user shard, item slice, sort group or output shard), never one per
event or row: the per-row work is vectorised in `shopllm.training_rows`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from pipelines.common import StorageDoFn
from shopllm import hashing, storage, training_rows
from shopllm.schemas import (
    CURATED_EVENTS,
    CURATED_ITEMS,
    SPLITS,
)
from shopllm.slots import SlotVocab
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab

log = logging.getLogger(__name__)

NAMESPACE = "shopllm.prepare"
ITEMS, EVENTS = "items", "events"  # the sources of BuildExamples' input
INPUT_COLUMNS = {ITEMS: training_rows.ITEM_COLUMNS, EVENTS: training_rows.EVENT_COLUMNS}
READ_FILES = 16  # curated files read into one element
USER_SHARDS = 8  # users are hashed into this many shards: the unit of parallel history and search building
ITEM_SLICE_ROWS = 25_000  # items are cut into slices of at most this many rows: the unit of parallel describe work
SORT_GROUPS = 8  # each split's sort buckets are sorted and cut into shards in this many groups (divides BUCKETS)


Key = tuple[str, int]  # (source, input shard), (split, sort group) or (split, shard)


@dataclass(frozen=True)
class Fanout:
    """How widely the work is spread over workers: user shards and sort groups per split. The bytes written
    do not depend on it: rows are numbered in bucket order whatever the groups."""

    user_shards: int = USER_SHARDS
    sort_groups: int = SORT_GROUPS


class ArrowTableCoder(beam.coders.Coder):
    """Arrow tables between steps as IPC streams. Beam samples element sizes by encoding elements; with few,
    large elements that costs more than the steps themselves, so the estimate is the table's buffer size."""

    def encode(self, table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def decode(self, data: bytes) -> pa.Table:
        return pa.ipc.open_stream(data).read_all()

    def estimate_size(self, table: pa.Table) -> int:
        return table.get_total_buffer_size()

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return pa.Table


beam.coders.registry.register_coder(pa.Table, ArrowTableCoder)


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


def parts_by_key(table: pa.Table, key: np.ndarray):
    """(key value, rows with that key) for every key present, from one reordering of the table."""
    order = np.argsort(key, kind="stable")
    table, key = table.take(pa.array(order)), key[order]
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    for start, end in zip(starts, [*starts[1:], len(key)]):
        yield int(key[start]), table.slice(start, end - start)


def keyed_by_sort_group(rows: pa.Table, sort_groups: int):
    """((split, group), rows) per (split, sort group) present, so the shuffle moves few large tables."""
    split = pc.index_in(rows["split"], value_set=pa.array(SPLITS)).to_numpy()
    key = split * sort_groups + rows["bucket"].to_numpy() // (training_rows.BUCKETS // sort_groups)
    for k, part in parts_by_key(rows, key):
        yield (SPLITS[k // sort_groups], k % sort_groups), part


# ---- building examples ---------------------------------------------------------------------------


def split_by_user_shard(table: pa.Table, shards: int = USER_SHARDS):
    """(shard, events of the users of that shard) for every user shard in a curated/events table."""
    if shards == 1:
        yield 0, table
        return
    users = pc.dictionary_encode(pc.fill_null(table["user_id"], "").combine_chunks())
    shard_of_user = (hashing.stable_fractions(users.dictionary.to_pylist()) * shards).astype(np.int32)  # stable_bucket
    yield from parts_by_key(table, shard_of_user[users.indices.to_numpy()])


def item_slices(table: pa.Table):
    """(slice, rows) of a curated/items table: describe rows are per item, so any cut will do."""
    for i, start in enumerate(range(0, table.num_rows, ITEM_SLICE_ROWS)):
        yield i, table.slice(start, ITEM_SLICE_ROWS)


def shard_input(element, user_shards: int):
    """((source, shard), table) pieces of one curated table; a user's events all land in one shard."""
    source, table = element
    pieces = split_by_user_shard(table, user_shards) if source == EVENTS else item_slices(table)
    for shard, piece in pieces:
        yield (source, shard), piece


class BuildShardExamples(StorageDoFn):
    """Rows of one input shard: history and search rows of a user shard (its distinct queries encoded in one
    encode_batch call), or describe rows of an item slice (attribute texts and descriptions in one call).
    Loads the tokenizer and the item vocabulary once per worker, from the paths it was given.

    The texts of an item slice encode on a helper thread and its describe rows are emitted at the end of the
    bundle: encode_batch releases the GIL, so while the item texts encode, the bundle's user shards are
    grouped on the bundle's thread."""

    def __init__(self, tokenizer_path: str, vocab_dir: str, n_text: int, cfg, sort_groups: int):
        super().__init__()
        self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg = tokenizer_path, vocab_dir, n_text, cfg
        self.sort_groups = sort_groups

    def setup(self):
        super().setup()
        self.tokenizer = TextTokenizer.load(self.tokenizer_path)
        self.slots = SlotVocab.of(self.tokenizer)
        self.item_tokens = training_rows.ItemTokens(
            pa.array(ItemVocab.load(self.vocab_dir).items, pa.string()), self.n_text
        )
        self.helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-helper")

    def start_bundle(self):
        self.pending = []

    def process(self, element):
        (source, _), tables = element
        table = pa.concat_tables(tables)
        if source == ITEMS:
            self.start_describe(table)  # its rows are emitted at the end of the bundle
        else:
            yield from keyed_by_sort_group(self.user_rows(table), self.sort_groups)

    def finish_bundle(self):
        for rows in self.described():
            for keyed in keyed_by_sort_group(rows, self.sort_groups):
                yield GlobalWindows.windowed_value(keyed)

    def start_describe(self, items: pa.Table) -> None:
        """Make the describe texts of an item slice and start their encode on the helper thread."""
        texts = training_rows.describe_texts(items, self.item_tokens, self.cfg, self.slots)
        self.pending.append((texts, self.helper.submit(self.tokenizer.encode_batch, texts.texts)))
        texts.hash_items()

    def encoding(self) -> bool:
        """Whether an item encode started in this bundle is still running (it holds the tokenizer's pool)."""
        return any(not encoded.done() for _, encoded in self.pending)

    def described(self) -> list[pa.Table]:
        """The describe rows of the item slices started in this bundle, once their texts are encoded."""
        pending, self.pending = self.pending, []
        return [
            self.counted(training_rows.describe_rows(texts, encoded.result(), self.cfg)) for texts, encoded in pending
        ]

    def teardown(self):
        self.helper.shutdown(cancel_futures=True)

    def user_rows(self, events: pa.Table) -> pa.Table:
        res = training_rows.shard_examples(events, self.item_tokens, self.cfg)
        search, text_tokens = training_rows.search_rows(res.searches, self.tokenizer, pool_busy=self.encoding())
        for name, n in (
            ("users", res.users),
            ("short_users", res.short_users),
            ("text_tokens", text_tokens),
            ("unknown_item_events", res.unknown_item_events),
            ("searches_without_target", res.searches_without_target),
            ("search_pairs_withheld", res.searches_withheld),
            ("tie_copy_rows", res.tie_copy_rows),
        ):
            counter(name).inc(n)
        return pa.concat_tables([res.history, search])

    @staticmethod
    def counted(res: training_rows.DescribeBatch) -> pa.Table:
        """The rows of a describe batch, its counts added (on the bundle's thread: Beam's metrics belong to
        the thread that runs the bundle)."""
        counter("text_tokens").inc(res.text_tokens)
        counter("items_without_description").inc(res.without_description)
        counter("unknown_items").inc(res.unknown_items)
        counter("attribute_rows").inc(res.attribute_rows)
        counter("zh_chars").inc(res.zh_chars)
        counter("zh_tokens").inc(res.zh_tokens)
        return res.rows


class BuildExamples(beam.PTransform):
    """(source, curated table) with source 'items' or 'events' -> ((split, sort group), rows) of all three kinds."""

    def __init__(self, tokenizer_path: str, vocab_dir: str, n_text: int, cfg, fanout: Fanout = Fanout()):
        super().__init__()
        self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg = str(tokenizer_path), str(vocab_dir), n_text, cfg
        self.fanout = fanout

    def expand(self, tables):
        fanout = self.fanout
        build = BuildShardExamples(self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg, fanout.sort_groups)
        # declared output types: no inference into the numpy code, and ArrowTableCoder for the tables
        pieces = tables | "ShardInputs" >> beam.FlatMap(shard_input, fanout.user_shards).with_output_types(
            tuple[Key, pa.Table]
        )
        return (
            pieces
            | "GroupInputs" >> beam.GroupByKey()
            | "BuildShardExamples" >> beam.ParDo(build).with_output_types(tuple[Key, pa.Table])
        )


# ---- writing deterministic, sized shards ---------------------------------------------------------


def shard_slices(element, group_sizes, shard_rows: int):
    """Cut a sorted group at the shard boundaries of its split: ((split, shard), (first row index, rows)).

    Rows of a split are numbered group by group (group 0 first), so every shard but the last of a split
    holds exactly `shard_rows` rows and the order does not depend on how the runner scheduled anything.
    `group_sizes` are (group key, rows) pairs, several per group allowed.
    """
    (split, group), rows = element
    start = sum(n for (s, g), n in group_sizes if s == split and g < group)
    i = 0
    while i < rows.num_rows:
        g = start + i
        shard = g // shard_rows
        take = min(rows.num_rows - i, (shard + 1) * shard_rows - g)
        yield (split, shard), (g, rows.slice(i, take))
        i += take


def sort_and_cut(element, group_sizes, shard_rows: int):
    """The rows of a sort group in their output order, cut at the shard boundaries (see shard_slices)."""
    key, tables = element
    yield from shard_slices((key, training_rows.sort_rows(pa.concat_tables(tables))), group_sizes, shard_rows)


def row_count(element) -> tuple[Key, int]:
    key, rows = element
    return key, rows.num_rows


def write_shard(staging: dict[str, str], split: str, shard: int, rows: pa.Table) -> tuple[str, int, int]:
    """staging[split]/part-NNNNN.parquet of the rows, counted; (split, shard, rows)."""
    write_shard_file(staging, split, shard, rows)
    return count_shard(split, shard, rows)


def write_shard_file(staging: dict[str, str], split: str, shard: int, rows: pa.Table) -> None:
    storage.write_table(training_rows.tokens_table(rows), staging[split], f"part-{shard:05d}.parquet", dictionary=False)


def count_shard(split: str, shard: int, rows: pa.Table) -> tuple[str, int, int]:
    """The counters of a written shard (on the bundle's thread); (split, shard, rows)."""
    counter(f"tokens_{split}").inc(training_rows.tokens_in(rows))
    for kind in pc.value_counts(rows["kind"]).to_pylist():
        counter(f"rows_{split}_{kind['values']}").inc(kind["counts"])
    counter(f"shards_{split}").inc()
    return split, shard, rows.num_rows


class WriteShard(StorageDoFn):
    """Writes each output shard into its split's staging folder (a local path or an attempt prefix)."""

    def __init__(self, staging: dict[str, str]):
        super().__init__()
        self.staging = staging

    def process(self, element):
        (split, shard), slices = element
        yield write_shard(
            self.staging, split, shard, pa.concat_tables([part for _, part in sorted(slices, key=lambda s: s[0])])
        )


class WriteShards(beam.PTransform):
    """((split, sort group), rows) -> staging[split]/part-NNNNN.parquet, at most shard_rows rows each."""

    def __init__(self, staging: dict[str, str], shard_rows: int, sort_groups: int = SORT_GROUPS):
        super().__init__()
        self.staging, self.shard_rows = {k: str(v) for k, v in staging.items()}, shard_rows
        self.sort_groups = sort_groups

    def expand(self, rows):
        # counted where the rows are made, so the counts are ready when a group is sorted and cut
        sizes = rows | "CountRows" >> beam.Map(row_count).with_output_types(tuple[Key, int])
        slices = (
            rows
            | "GroupSortGroups" >> beam.GroupByKey()
            | "SortAndCut"
            >> beam.FlatMap(sort_and_cut, beam.pvalue.AsList(sizes), self.shard_rows).with_output_types(
                tuple[Key, tuple[int, pa.Table]]
            )
        )
        return (
            slices
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(WriteShard(self.staging)).with_output_types(tuple[str, int, int])
        )


def read_chunk(chunk: tuple[str, Sequence[str]]) -> tuple[str, pa.Table]:
    source, paths = chunk
    return source, storage.read_columns(paths, INPUT_COLUMNS[source])


class ReadChunk(StorageDoFn):
    """(source, files) -> (source, their columns as one table), read through the storage layer."""

    def process(self, chunk):
        yield read_chunk(chunk)


def read_curated(p, files: dict[str, list[str]]):
    """(source, table) per READ_FILES files of curated/items and curated/events: few, large Arrow tables,
    spread over the workers."""
    sources = {ITEMS: files[CURATED_ITEMS], EVENTS: files[CURATED_EVENTS]}
    chunks = [
        (source, paths[i : i + READ_FILES])
        for source, paths in sources.items()
        for i in range(0, len(paths), READ_FILES)
    ]
    return (
        p
        | "CuratedFiles" >> beam.Create(chunks)
        | "ReadCurated" >> beam.ParDo(ReadChunk()).with_output_types(tuple[str, pa.Table])
    )


class Prepare(beam.PTransform):
    """The prepare stage: the night's curated files -> token shards of the three splits, each written into its
    staging folder (`staging` maps each split to one)."""

    def __init__(self, files: dict[str, list[str]], tokenizer_path: str, vocab_dir: str, n_text: int, cfg, staging):
        super().__init__()
        self.files, self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg = (
            files,
            str(tokenizer_path),
            str(vocab_dir),
            n_text,
            cfg,
        )
        self.staging = {split: str(folder) for split, folder in staging.items()}

    def expand(self, pbegin):
        return (
            read_curated(pbegin, self.files)
            | "BuildExamples" >> BuildExamples(self.tokenizer_path, self.vocab_dir, self.n_text, self.cfg)
            | "WriteShards" >> WriteShards(self.staging, self.cfg.shard_rows)
        )
