"""Every dataset's schema and name, declared once (TFX style) and imported everywhere.

Paths are relative to the `--out` directory; each dataset is partitioned Hive-style by `dt=YYYY-MM-DD`.
"""

import pyarrow as pa

# ---- dataset names (relative paths under --out) -------------------------------------------------
CURATED_ITEMS = "curated/items"
CURATED_EVENTS = "curated/events"
CURATED_SESSIONS = "curated/sessions"
REJECTS_CATALOG = "rejects/catalog"
REJECTS_EVENTS = "rejects/events"
TOKENS = "tokens"  # tokens/{train,valid,test}/dt=D
RECOMMENDATIONS = "scores/recommendations"
DESCRIPTIONS = "scores/descriptions"
REPORTS = "reports"
SUMMARIES = "summaries"  # summaries/dt=D/<stage>.json: each stage's counts, read by the report
VOCAB_DIR = "vocab"  # vocab/tokenizer.json, vocab/item_vocab.json (append-only item ids)
MODELS_DIR = "models"  # models/<version>/..., models/LATEST

SPLITS = ("train", "valid", "test")
# the Parquet datasets a night publishes for its date, in stage order (tokens: one per split)
NIGHTLY_DATASETS = (
    CURATED_ITEMS,
    CURATED_EVENTS,
    CURATED_SESSIONS,
    REJECTS_CATALOG,
    REJECTS_EVENTS,
    *(f"{TOKENS}/{split}" for split in SPLITS),
    RECOMMENDATIONS,
    DESCRIPTIONS,
)
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "search")
SCOPES = ("user", "session", "query")
EXAMPLE_KINDS = ("history", "search", "describe")

TS = pa.timestamp("us", tz="UTC")

# ---- curated ------------------------------------------------------------------------------------
ITEMS = pa.schema(
    [
        ("item_id", pa.string()),
        ("title", pa.string()),
        ("description", pa.string()),
        ("category", pa.string()),  # normalised path, levels joined by " > "
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("currency", pa.string()),
        ("attributes", pa.map_(pa.string(), pa.string())),
        ("language", pa.string()),  # 'zh' or 'en', from the title's script
        ("updated_at", TS),
        ("source_hash", pa.string()),  # hash of the cleaned fields a description is generated from
    ]
)

EVENTS = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("session_id", pa.string()),  # given, or derived from a 30-minute inactivity gap
        ("event_type", pa.string()),
        ("item_id", pa.string()),  # null for search
        ("query", pa.string()),  # cleaned; null unless search
        ("ts", TS),
        ("arrival", pa.int64()),  # file index << 32 | line: the tie-breaker after ts
    ]
)

SESSIONS = pa.schema(
    [
        ("session_id", pa.string()),
        ("user_id", pa.string()),
        ("start_ts", TS),
        ("end_ts", TS),
        ("n_events", pa.int32()),
        # aligned lists, one entry per event in time order
        ("event_types", pa.list_(pa.string())),
        ("item_ids", pa.list_(pa.string())),  # null entry for a search
        ("queries", pa.list_(pa.string())),  # null entry unless a search
    ]
)

REJECTS = pa.schema(
    [
        ("source", pa.string()),  # 'catalog' | 'events'
        ("file", pa.string()),
        ("line", pa.int64()),  # 1-based line for text files, 0-based row for Parquet
        ("reason", pa.string()),  # a code from shopllm.ingest.Reason
        ("message", pa.string()),
        ("raw", pa.string()),  # the record as read (invalid UTF-8 shown with backslash escapes)
    ]
)

# ---- prepared training examples ------------------------------------------------------------------
TOKENS_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # history | search | describe
        ("subject_id", pa.string()),  # user_id, query text or item_id
        ("input_ids", pa.list_(pa.int32())),
        ("target_item", pa.string()),  # valid/test history and search: the held-out item; else null
        ("target_id", pa.int32()),  # its token id, -1 when none
        (
            "history_ids",
            pa.list_(pa.int32()),
        ),  # valid/test: every item token of the subject before the target (masked when ranking)
    ]
)

# ---- scores -------------------------------------------------------------------------------------
RECOMMENDATIONS_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("scope", pa.string()),  # user | session | query
        ("subject_id", pa.string()),
        ("rank", pa.int32()),  # 1..K
        ("item_id", pa.string()),
        ("score", pa.float32()),  # log-probability under the model
    ]
)

DESCRIPTIONS_SCHEMA = pa.schema(
    [
        ("model_version", pa.string()),
        ("item_id", pa.string()),
        ("language", pa.string()),
        ("description", pa.string()),
        ("source_hash", pa.string()),
        ("is_fallback", pa.bool_()),  # true when the model's text did not pass the gate and a template was used
        ("generated_dt", pa.string()),  # the night it was generated; older when carried over unchanged
        ("fallback_reason", pa.string()),  # why the model's text was not published (null when it was)
        ("flags", pa.list_(pa.string())),  # faithfulness errors found in the model's text (shopllm.faithfulness)
        ("model_text", pa.string()),  # the model's text before the gate (null when the model had no token for the item)
    ]
)
