"""The score pipeline: ranked recommendations and generated descriptions for one date.

    curated/events ───> EventRequests (users, queries) ─┐
    curated/sessions ─> SessionRequests ─────────────────┴─> RankSubjects (RunInference)
        ─> WriteSortedParquet ─> scores/recommendations
    curated/items + previous descriptions ─> DescribeItems (RunInference for new/changed)
        ─> WriteSortedParquet ─> scores/descriptions

`Score` is the whole stage as one composite transform; both outputs are written into staging folders and
published by `jobs.score.run_score` after the pipeline finished, so readers never see half a partition;
`models/LATEST` moves only after both are published.

Every file is read and written through `shopllm.storage` (a local path or an s3:// URI): the curated files
the driver listed from the committed partitions, the model version folder under `--out` (weights, tokenizer
and item vocabulary, loaded once per worker by `modelstore.load_folder`), the staging folders. The driver's
storage options (S3 endpoint and keys) travel with each DoFn and the model handler and are applied where
they run (`pipelines.common.use_storage`).
"""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from pipelines.common import StorageDoFn, single_worker, use_storage
from shopllm import modelstore, storage
from shopllm.ann import AnnSettings
from shopllm.ann import settings as ann_settings
from shopllm.config import ScoreConfig
from shopllm.describe import Describer, DescribeRequest, describe_batch, needs_generation, request_of
from shopllm.faithfulness import Lexicon
from shopllm.hashing import source_hash_of
from shopllm.lexical import lexical_weight
from shopllm.progress import Progress
from shopllm.ranking import (
    EVENT_COLUMNS,
    Ranker,
    RankRequest,
    day_bounds,
    query_counts,
    query_request,
    rank_batch,
    session_on_day,
    session_request,
    user_fragments,
    user_request,
)
from shopllm.schemas import (
    DESCRIPTIONS_SCHEMA,
    RECOMMENDATIONS_SCHEMA,
    SCOPES,
)
from shopllm.tokenizer import TextTokenizer

log = logging.getLogger(__name__)
NAMESPACE = "shopllm.score"
OUTPUT_SHARDS = 4  # fixed, so a rerun writes the same files


# ---- the model handler ------------------------------------------------------------------------
class ShopModelHandler(ModelHandler):
    """RunInference handler for the shopllm model: loads model, tokenizer and item vocabulary once per
    worker; `task` 'rank' ranks RankRequests, 'describe' writes descriptions for DescribeRequests.

    Batches hold prompts of different lengths; the inference functions group them into length
    buckets and left-pad within a bucket (see shopllm.ranking.rank_batch / describe.describe_batch).
    Wrap in KeyedModelHandler so every result keeps its subject.
    """

    def __init__(
        self,
        model_dir: str,
        task: str,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        top_k: int = 20,
        catalog: Sequence[str] = (),
        max_new_tokens: int = 96,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        no_repeat_ngram: int = 0,
        lexicon: Lexicon | None = None,
        item_texts: Mapping[str, str] | None = None,
        ann: AnnSettings | None = None,
    ):
        if task not in ("rank", "describe"):
            raise ValueError(f"unknown task {task!r}")
        # fixed-size batches (the last one of a bundle may be smaller): BatchElements would otherwise start
        # at one element and grow slowly, running many tiny forward passes
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.model_dir, self.task, self.device = str(model_dir), task, device
        self.top_k, self.catalog = top_k, tuple(catalog)
        self.decoding = dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            no_repeat_ngram=no_repeat_ngram,
        )
        self.lexicon = lexicon
        self.item_texts = item_texts  # rank: the catalog's texts, for the query blend (shopllm.lexical)
        self.ann = ann  # rank: above its catalog size, rank through an approximate item index (shopllm.ann)
        self.storage_options = storage.options()  # the driver's: applied in the worker before loading
        self._progress: Progress | None = None

    def load_model(self):
        use_storage(self.storage_options)
        loaded = modelstore.load_folder(self.model_dir, self.device)
        tokenizer = TextTokenizer.load(loaded.tokenizer_path)
        if self.task == "rank":
            weight = lexical_weight(loaded.config)
            return Ranker(
                loaded.model,
                tokenizer,
                loaded.items,
                self.catalog,
                self.device,
                item_texts=self.item_texts if weight else None,
                lexical_weight=weight,
                ann=self.ann,
            )
        return Describer(loaded.model, tokenizer, loaded.items, self.device, **self.decoding, lexicon=self.lexicon)

    def run_inference(self, batch, model, inference_args=None):
        results = rank_batch(model, batch, self.top_k) if self.task == "rank" else describe_batch(model, batch)
        if self._progress is None:  # one per worker process: a bar on a terminal, else a line every 15 s
            self._progress = Progress(
                "score: " + ("ranked" if self.task == "rank" else "described"),
                unit="subjects" if self.task == "rank" else "items",
            )
        self._progress.update(len(batch))
        return [PredictionResult(example, result) for example, result in zip(batch, results)]

    def get_num_bytes(self, batch) -> int:  # the default pickles every batch just to count bytes
        return sum(len(r.items) + len(r.query) if isinstance(r, RankRequest) else len(r.title) for r in batch)

    def get_metrics_namespace(self) -> str:
        return "shopllm.RunInference"


# ---- subjects -----------------------------------------------------------------------------------
class _ParquetRows(StorageDoFn):
    """A Parquet file (local path or URI) -> its rows as dicts, read through the storage layer."""

    def __init__(self, columns: list[str] | None):
        super().__init__()
        self.columns = columns

    def process(self, uri: str):
        yield from storage.read_table([uri], columns=self.columns).to_pylist()


def _files(pbegin, label: str, files: list[str]):
    """Exactly these files (a committed partition's: on object storage its folder also holds other attempts),
    spread over the workers file by file when there are several."""
    names = pbegin | f"{label}Files" >> beam.Create(files)
    if not single_worker(pbegin.pipeline) and files:
        names = names | f"{label}Spread" >> beam.Reshuffle()
    return names


def _read(pbegin, label: str, files: list[str], columns: list[str] | None = None):
    """Rows of exactly these files, as dicts (see _files)."""
    return _files(pbegin, label, files) | label >> beam.ParDo(_ParquetRows(columns))


class _EventsByUserAndQuery(StorageDoFn):
    """A curated events file -> (user_id, UserEvents) per user in it (main output) and (query, count) per
    query searched in the window (output 'queries'): one read of the file, computed in Arrow."""

    def __init__(self, end: dt.datetime, query_since: dt.datetime):
        super().__init__()
        self.end, self.query_since = end, query_since

    def process(self, uri: str):
        table = storage.read_table([uri], columns=EVENT_COLUMNS)
        Metrics.counter(NAMESPACE, "events_read").inc(table.num_rows)
        yield from user_fragments(table, self.end)
        for query_count in query_counts(table, self.query_since, self.end):
            yield beam.pvalue.TaggedOutput("queries", query_count)


class EventRequests(beam.PTransform):
    """Curated events files -> (('user', user_id), RankRequest) for users active in the last `active_days`
    days, and (('query', query), RankRequest) for queries searched >= `min_query_count` times in that window.

    Each file is read once for both; what crosses the shuffle is one fragment of columns per user and file
    and one count per query and file, never a row per event."""

    def __init__(self, date: str, active_days: int, min_query_count: int):
        super().__init__()
        _, self.end = day_bounds(date)
        self.since = self.end - dt.timedelta(days=active_days)
        self.min_query_count = min_query_count

    def expand(self, files):
        since, m = self.since, self.min_query_count
        split = files | "ReadEvents" >> beam.ParDo(_EventsByUserAndQuery(self.end, since)).with_outputs(
            "queries", main="users"
        )
        users = (
            split.users
            | "GroupByUser" >> beam.GroupByKey()
            | "UserRequest"
            >> beam.FlatMap(lambda kv: [] if (r := user_request(kv[1], since)) is None else [(("user", kv[0]), r)])
        )
        queries = (
            split.queries
            | "CountPerQuery" >> beam.CombinePerKey(sum)
            | "Frequent" >> beam.Filter(lambda kv: kv[1] >= m)
            | "QueryRequest" >> beam.Map(lambda kv: (("query", kv[0]), query_request(kv[0])))
        )
        return (users, queries) | "UsersAndQueries" >> beam.Flatten()


class SessionRequests(beam.PTransform):
    """Sessions -> (('session', session_id), RankRequest) for sessions with events on the date."""

    def __init__(self, date: str):
        super().__init__()
        self.start, self.end = day_bounds(date)

    def expand(self, sessions):
        start, end = self.start, self.end
        return (
            sessions
            | "OnTheDay" >> beam.Filter(lambda s: session_on_day(s, start, end))
            | "SessionRequest" >> beam.Map(lambda s: (("session", s["session_id"]), session_request(s)))
        )


class _RecommendationRows(beam.DoFn):
    """(key, PredictionResult) -> one list of the subject's K rows (one element per subject, not per row:
    Beam's per-element cost is then paid once per subject); counts scored / skipped / short of K per scope."""

    def __init__(self, version: str, k: int):
        self.version, self.k = version, k

    def process(self, keyed):
        (scope, subject), pred = keyed
        res = pred.inference
        if res.n_unknown:
            Metrics.counter(NAMESPACE, f"{scope}_unknown_history_items").inc(res.n_unknown)
        if res.skipped:
            Metrics.counter(NAMESPACE, f"{scope}_skipped_{res.skipped}").inc()
            return
        Metrics.counter(NAMESPACE, f"{scope}_scored").inc()
        if len(res.item_ids) < self.k:
            Metrics.counter(NAMESPACE, f"{scope}_short_of_k").inc()
        yield [
            {
                "model_version": self.version,
                "scope": scope,
                "subject_id": subject,
                "rank": rank,
                "item_id": item,
                "score": score,
            }
            for rank, (item, score) in enumerate(zip(res.item_ids, res.scores), start=1)
        ]


class RankSubjects(beam.PTransform):
    """Keyed RankRequests -> lists of RECOMMENDATIONS rows (one list per subject) via RunInference."""

    def __init__(self, handler: ShopModelHandler, version: str):
        super().__init__()
        self.handler, self.version = handler, version

    def expand(self, requests):
        return (
            requests
            | "RunInference" >> RunInference(KeyedModelHandler(self.handler))
            | "ToRows" >> beam.ParDo(_RecommendationRows(self.version, self.handler.top_k))
        )


# ---- descriptions -----------------------------------------------------------------------------
class DescribeItems(beam.PTransform):
    """(items, previous descriptions) -> [DESCRIPTIONS row] per item: new/changed items generated, the rest
    carried over."""

    def __init__(self, handler: ShopModelHandler, version: str, date: str):
        super().__init__()
        self.handler, self.version, self.date = handler, version, date

    def expand(self, pcolls):
        items, previous = pcolls
        joined = {
            "item": items | "KeyItems" >> beam.Map(lambda r: (r["item_id"], r)),
            "prev": previous | "KeyPrevious" >> beam.Map(lambda r: (r["item_id"], r)),
        } | "JoinPrevious" >> beam.CoGroupByKey()
        split = joined | "GenerateOrCarry" >> beam.ParDo(_Plan()).with_outputs("generate", main="carried")
        version, date = self.version, self.date
        generated = (
            split.generate
            | "RunInference" >> RunInference(KeyedModelHandler(self.handler))
            | "GeneratedRows" >> beam.Map(lambda kv: _generated_row(kv, version, date))
        )
        return (
            (split.carried, generated)
            | "AllDescriptions" >> beam.Flatten()
            | "AsRowLists" >> beam.Map(lambda row: [row])
        )


class _Plan(beam.DoFn):
    def process(self, kv):
        item_id, grouped = kv
        items, prev = list(grouped["item"]), list(grouped["prev"])
        if items:  # an item gone from the catalog is not published again
            yield from self._plan(item_id, items[0], prev[0] if prev else None)

    @staticmethod
    def _plan(item_id, item, previous):
        if needs_generation(item, previous):
            Metrics.counter(NAMESPACE, "descriptions_generated").inc()
            yield beam.pvalue.TaggedOutput("generate", ((item_id, source_hash_of(item)), request_of(item)))
        else:
            Metrics.counter(NAMESPACE, "descriptions_carried_over").inc()
            if previous.get("is_fallback"):
                Metrics.counter(NAMESPACE, "descriptions_fallbacks").inc()
            yield {name: previous.get(name) for name in DESCRIPTIONS_SCHEMA.names}


def _generated_row(keyed, version: str, date: str) -> dict[str, Any]:
    (item_id, src_hash), pred = keyed
    req: DescribeRequest = pred.example
    res = pred.inference
    if res.is_fallback:
        Metrics.counter(NAMESPACE, "descriptions_fallbacks").inc()
        Metrics.counter(NAMESPACE, f"descriptions_fallback_{res.reason}").inc()
    for flag in res.flags:
        Metrics.counter(NAMESPACE, f"descriptions_flag_{flag}").inc()
    return {
        "model_version": version,
        "item_id": item_id,
        "language": req.language,
        "description": res.description,
        "source_hash": src_hash,
        "is_fallback": res.is_fallback,
        "generated_dt": date,
        "fallback_reason": res.reason,
        "flags": list(res.flags),
        "model_text": res.model_text,
    }


# ---- output -----------------------------------------------------------------------------------
def write_rows(folder: str, shard: int, groups: Iterable[list[dict]], schema: pa.Schema, order) -> str:
    """Write one shard's row groups as `folder/part-<shard>.parquet` (through the storage layer), sorted by
    `order` (a sorted Arrow table of the table; Arrow sorts strings by code point, as Python does)."""
    table = pa.Table.from_pylist([r for g in groups for r in g], schema=schema)
    return storage.write_table(order(table), folder, f"part-{shard:05d}.parquet")


class _WriteRows(StorageDoFn):
    """(shard, row lists) -> the shard's Parquet file in the staging folder (see write_rows)."""

    def __init__(self, folder: str, schema: pa.Schema, order):
        super().__init__()
        self.folder, self.schema, self.order = folder, schema, order

    def process(self, shard_groups):
        shard, groups = shard_groups
        yield write_rows(self.folder, shard, groups, self.schema, self.order)


def recommendation_order(table: pa.Table) -> pa.Table:
    """By scope (in SCOPES order), subject, rank."""
    scope_index = pc.index_in(table["scope"], value_set=pa.array(SCOPES))
    order = pc.sort_indices(
        pa.table({"scope": scope_index, "subject": table["subject_id"], "rank": table["rank"]}),
        sort_keys=[("scope", "ascending"), ("subject", "ascending"), ("rank", "ascending")],
    )
    return table.take(order)


def description_order(table: pa.Table) -> pa.Table:
    return table.sort_by("item_id")


class WriteSortedParquet(beam.PTransform):
    """Lists of rows (all of one subject) -> a fixed number of Parquet shards in `folder`, rows sorted in each,
    so a rerun is byte-identical. `shard_of(row)` names the shard of a list by its first row."""

    def __init__(self, folder: str, schema: pa.Schema, shard_of, order, shards: int = OUTPUT_SHARDS):
        super().__init__()
        self.folder, self.schema, self.shard_of, self.order, self.shards = folder, schema, shard_of, order, shards

    def expand(self, rows):
        shard_of, n = self.shard_of, self.shards
        return (
            rows
            | "KeyByShard" >> beam.Map(lambda g: (zlib.crc32(shard_of(g[0]).encode("utf-8")) % n, g))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.ParDo(_WriteRows(self.folder, self.schema, self.order))
        )


# ---- the whole stage ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ScoreInputs:
    items: list[str]
    events: list[str]
    sessions: list[str]
    previous_descriptions: list[str]  # files of the newest descriptions partition before the date
    previous_date: str | None


class Score(beam.PTransform):
    """The score stage: the night's curated data -> recommendations (user, session and query scopes) and
    descriptions (new or changed items generated, the others carried over), each written into its staging
    folder (`rec_dir`, `desc_dir`)."""

    def __init__(
        self,
        inputs: ScoreInputs,
        *,
        model_dir: str,
        version: str,
        date: str,
        cfg: ScoreConfig,
        catalog: Sequence[str],
        rec_dir: str,
        desc_dir: str,
        lexicon: Lexicon | None = None,
        item_texts: Mapping[str, str] | None = None,
    ):
        super().__init__()
        self.inputs, self.version, self.date, self.cfg = inputs, version, date, cfg
        self.rec_dir, self.desc_dir = rec_dir, desc_dir
        common = dict(device=cfg.device, batch_size=cfg.batch_size)
        self.ranker = ShopModelHandler(
            model_dir, "rank", top_k=cfg.top_k, catalog=catalog, item_texts=item_texts, ann=ann_settings(cfg), **common
        )
        self.describer = ShopModelHandler(
            model_dir,
            "describe",
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed,
            no_repeat_ngram=cfg.no_repeat_ngram,
            lexicon=lexicon,
            **common,
        )

    def expand(self, pbegin):
        inputs, cfg, date = self.inputs, self.cfg, self.date
        events = _files(pbegin, "Events", inputs.events)
        sessions = _read(pbegin, "ReadSessions", inputs.sessions, ["session_id", "start_ts", "end_ts", "item_ids"])
        requests = (
            events | "EventRequests" >> EventRequests(date, cfg.active_days, cfg.min_query_count),
            sessions | "SessionRequests" >> SessionRequests(date),
        ) | "AllSubjects" >> beam.Flatten()
        (
            requests
            | "RankSubjects" >> RankSubjects(self.ranker, self.version)
            | "WriteRecommendations"
            >> WriteSortedParquet(self.rec_dir, RECOMMENDATIONS_SCHEMA, lambda r: r["subject_id"], recommendation_order)
        )
        items = _read(pbegin, "ReadItems", inputs.items)
        previous = _read(pbegin, "ReadPreviousDescriptions", inputs.previous_descriptions)
        (
            (items, previous)
            | "DescribeItems" >> DescribeItems(self.describer, self.version, date)
            | "WriteDescriptions"
            >> WriteSortedParquet(self.desc_dir, DESCRIPTIONS_SCHEMA, lambda r: r["item_id"], description_order)
        )
