"""The run report: `reports/dt=D/report.json` and a self-contained `report.html` with embedded plots.

It reads what the stages left in `summaries/dt=D/*.json` and the published partitions; it computes no
new figures of its own, so the report never disagrees with the stages.
"""

from __future__ import annotations

import datetime
import html
import io
import re
from typing import Any

from shopllm import schemas, storage

STAGE_SUMMARIES = ("ingest", "prepare", "train", "score", "evaluate", "nightly")


# ---- collect ------------------------------------------------------------------------------------
def collect(out: str, date: str) -> dict[str, Any]:
    try:
        items = storage.read_partition(out, schemas.CURATED_ITEMS, date).to_pandas()[["item_id", "title", "category"]]
    except FileNotFoundError:
        items = None
    summaries = {}
    for stage in STAGE_SUMMARIES:
        summary = storage.read_json_if_exists(storage.summary_path(out, date, stage))
        if summary is not None:
            summaries[stage] = summary
    previous = previous_date(out, date)
    descriptions = _descriptions(out, date, items)
    return {
        "date": date,
        "summaries": summaries,
        "previous_date": previous,
        "previous_summaries": _summaries(out, previous) if previous else {},
        "metrics_history": metrics_history(out, date),
        "top_items": top_recommended_items(out, date, items),
        "sample_descriptions": sample_descriptions(descriptions, date, items),
        "fallback_examples": fallback_examples(descriptions, date, items),
        "reject_examples": reject_examples(out, date),
    }


def _summaries(out, date: str) -> dict[str, Any]:
    found = {stage: storage.read_json_if_exists(storage.summary_path(out, date, stage)) for stage in STAGE_SUMMARIES}
    return {stage: summary for stage, summary in found.items() if summary is not None}


def summary_dates(out) -> list[str]:
    """Dates that have a summaries/dt=D/ folder, oldest first."""
    names = storage.list_names(storage.join(str(out), schemas.SUMMARIES))
    return sorted(n[3:] for n in names if n.startswith("dt="))


def previous_date(out, date: str) -> str | None:
    """The latest night before `date` that left summaries."""
    earlier = [d for d in summary_dates(out) if d < date]
    return earlier[-1] if earlier else None


def reject_examples(out, date: str, width: int = 240) -> list[dict[str, Any]]:
    """Per source and reason: how many records were rejected, and the first one's message and raw text."""
    rows = []
    for dataset in (schemas.REJECTS_CATALOG, schemas.REJECTS_EVENTS):
        try:
            rejects = storage.read_partition(out, dataset, date).to_pandas()
        except FileNotFoundError:
            continue
        for (source, reason), group in rejects.groupby(["source", "reason"], sort=True):
            first = group.sort_values(["file", "line"]).iloc[0]
            raw = str(first["raw"] if first["raw"] is not None else "")
            rows.append(
                {
                    "source": source,
                    "reason": reason,
                    "records": len(group),
                    "example": f"{first['file']}:{first['line']}: {first['message']}",
                    "raw": raw if len(raw) <= width else raw[: width - 1] + "…",
                }
            )
    return rows


def _numbers(d: Any, prefix: str = "") -> dict[str, float]:
    """Flatten the numeric leaves of a nested dict: {'user': {'ndcg@10': .1}} -> {'user.ndcg@10': .1}."""
    flat: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            flat.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        flat[prefix[:-1]] = float(d)
    return flat


def metrics_history(out, date: str) -> list[dict[str, Any]]:
    """Evaluation metrics of every night up to `date`, oldest first."""
    rows = []
    for d in summary_dates(out):
        summary = storage.read_json_if_exists(storage.summary_path(out, d, "evaluate")) if d <= date else None
        if summary is not None:
            rows.append({"date": d, **_numbers(summary)})
    return rows


def _records(frame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values (JSON-ready)."""
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in frame.to_dict("records")]


def top_recommended_items(out, date: str, items, n: int = 10) -> list[dict[str, Any]]:
    try:
        recs = storage.read_partition(out, schemas.RECOMMENDATIONS, date).to_pandas()
    except FileNotFoundError:
        return []
    if items is None:
        return []
    users = recs[recs.scope == "user"]
    if users.empty:
        return []
    counts = users.groupby("item_id").agg(times=("subject_id", "size"), best_rank=("rank", "min")).reset_index()
    counts = counts.sort_values(["times", "item_id"], ascending=[False, True]).head(n)
    return _records(counts.merge(items, on="item_id", how="left"))


def _descriptions(out, date: str, items):
    """The night's descriptions partition as a DataFrame; None when it or the catalog is missing."""
    try:
        descs = storage.read_partition(out, schemas.DESCRIPTIONS, date).to_pandas()
    except FileNotFoundError:
        return None
    return None if items is None else descs


def sample_descriptions(descs, date: str, items, n: int = 5) -> list[dict[str, Any]]:
    """The first published generated descriptions of the night's partition `descs` (of all of it, when none
    was generated tonight; shown when evaluate has no examples)."""
    if descs is None:
        return []
    published = descs[~descs.is_fallback.astype(bool)]
    fresh = published[published.generated_dt == date] if "generated_dt" in published else published
    pick = (fresh if len(fresh) else published).sort_values("item_id").head(n)
    cols = ["item_id", "title", "language", "description", "generated_dt", "flags"]
    merged = pick.merge(items[["item_id", "title"]], on="item_id", how="left")
    if "flags" in merged:
        merged["flags"] = [", ".join(map(str, f)) if f is not None and len(f) else "none" for f in merged["flags"]]
    return _records(merged[[c for c in cols if c in merged]])


def fallback_examples(descs, date: str, items, n: int = 5) -> list[dict[str, Any]]:
    """The first descriptions of the night's partition `descs` that got the fallback (of all of it, when none
    was generated tonight): why, and the model's text the gate saw."""
    if descs is None or "fallback_reason" not in descs:
        return []
    fallbacks = descs[descs.is_fallback.astype(bool)]
    fresh = fallbacks[fallbacks.generated_dt == date]
    pick = (fresh if len(fresh) else fallbacks).sort_values("item_id").head(n)  # else: carried over from before
    merged = pick.merge(items[["item_id", "title"]], on="item_id", how="left")
    return [
        {
            "item_id": str(r["item_id"]),
            "title": str(r["title"]),
            "generated": str(r["generated_dt"]),
            "reason": str(r["fallback_reason"]),
            "flags": ", ".join(map(str, r["flags"])) if r["flags"] is not None and len(r["flags"]) else "none",
            "model text (not published)": str(r["model_text"] or ""),
            "published instead": str(r["description"]),
        }
        for r in merged.to_dict("records")
    ]


QUALITY_COLUMNS = {  # report column -> (section of a language's figures, field)
    "items": (None, "items"),
    "published as generated": (None, "published_generated_share"),
    "contradiction (before gate)": ("before_gate", "contradiction_rate"),
    "wrong brand (before)": ("before_gate", "wrong_brand_rate"),
    "wrong model (before)": ("before_gate", "wrong_model_rate"),
    "misbinding (before)": ("before_gate", "misbinding_rate"),
    "unsupported (before)": ("before_gate", "unsupported_rate"),
    "any blocking (after gate)": ("after_gate", "any_blocking_rate"),
    "coverage (after)": ("after_gate", "coverage"),
    "distinct-2": (None, "distinct-2"),
    "fallback reasons": (None, "fallback_reasons"),
}


def description_quality_rows(evaluate: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per language (and 'all') of the evaluate stage's description figures."""
    d = evaluate.get("descriptions", {})
    rows = []
    for lang, q in d.items():
        if not isinstance(q, dict) or "before_gate" not in q:
            continue
        row = {"language": lang}
        for col, (section, key) in QUALITY_COLUMNS.items():
            v = (q.get(section) or {}).get(key) if section else q.get(key)
            row[col] = ", ".join(f"{k}: {n}" for k, n in v.items()) or "none" if isinstance(v, dict) else v
        rows.append(row)
    return rows


# ---- plots --------------------------------------------------------------------------------------
def _svg(fig) -> str:
    """The figure as inline SVG markup: crisp at any zoom, text as text, each series a group whose id is
    its gid (see `_series_gid`), each point a marker element; no date stamp, so reruns are identical."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shopllm"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _series_gid(plot: str, label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{plot} {label}".lower()).strip("-")


def _curves(train: dict) -> dict[str, list[tuple[float, float]]]:
    """Series by name from the train summary: `x_curve: [[step, value], ...]` becomes series `x`, and
    lists of `{'step': s, name: value}` records (evaluations) give one series per numeric field."""
    series: dict[str, list[tuple[float, float]]] = {}
    for key, value in train.items():
        if not isinstance(value, list) or not value:
            continue
        if key.endswith("_curve") and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in value):
            series[key[: -len("_curve")]] = [tuple(r) for r in value]
        elif all(isinstance(r, dict) and "step" in r for r in value):
            for r in value:
                for k, v in r.items():
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                        series.setdefault(k, []).append((r["step"], v))
    if "loss" in series:
        series.pop("train_loss", None)  # the per-step curve says it better than the per-evaluation points
        series["train loss"] = series.pop("loss")
    return series


TREND_SERIES = {  # plot label -> flattened evaluate field (see metrics_history)
    "user ndcg@10": "ranking.user.ndcg@10",
    "session ndcg@10": "ranking.session.ndcg@10",
    "search ndcg@10": "ranking.query.ndcg@10",
    "user hr@10": "ranking.user.hr@10",
    "catalog with a model description": "descriptions.catalog_model_share",
}


def plots(report: dict[str, Any]) -> dict[str, str]:
    """Inline SVG figures by title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    s = report["summaries"]
    curves = _curves(s.get("train", {}))
    loss = {k: v for k, v in curves.items() if "loss" in k}
    if loss:
        fig, ax = plt.subplots(figsize=(6, 3))
        for name, pts in sorted(loss.items()):
            ax.plot(*zip(*pts), label=name)
        ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.legend(), ax.set_title("Training loss")
        out["Training loss"] = _svg(fig)
    ndcg = {
        k: pts
        for k, v in curves.items()
        if ("ndcg@" in k or k.startswith("hr@")) and (pts := [p for p in v if p[1] is not None])
    }
    if ndcg:
        fig, ax = plt.subplots(figsize=(6, 3))
        for name, pts in sorted(ndcg.items()):
            ax.plot(*zip(*pts), marker="o", label=name, gid=_series_gid("validation", name))
        ax.set_xlabel("step"), ax.legend(), ax.set_title("Validation ranking")
        out["Validation ndcg@10"] = _svg(fig)
    rejects = {
        src: v.get("rejected", {})
        for src, v in s.get("ingest", {}).items()
        if isinstance(v, dict) and isinstance(v.get("rejected"), dict)
    }
    if any(rejects.values()):
        labels = [f"{src}:{r}" for src, rs in rejects.items() for r in sorted(rs)]
        values = [rs[r] for src, rs in rejects.items() for r in sorted(rs)]
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(labels) + 1))
        ax.barh(labels, values), ax.set_xlabel("records"), ax.set_title("Rejected records by reason")
        out["Rejects by reason"] = _svg(fig)
    history = report["metrics_history"]
    trends = {label: key for label, key in TREND_SERIES.items() if any(key in row for row in history)}
    if history and trends:
        import matplotlib.dates as mdates

        fig, ax = plt.subplots(figsize=(7, 3))
        for label, key in trends.items():
            pts = [(datetime.date.fromisoformat(row["date"]), row[key]) for row in history if key in row]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, gid=_series_gid("trend", label))
        first, last = (datetime.date.fromisoformat(history[i]["date"]) for i in (0, -1))
        pad = datetime.timedelta(days=max(1, (last - first).days // 20))
        ax.set_xlim(first - pad, last + pad)
        span = (last - first).days
        locator = mdates.DayLocator(interval=max(1, span // 7)) if span <= 21 else mdates.AutoDateLocator(maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_ylim(0, 1.05), ax.set_title(f"Evaluation over nights ({len(history)} night(s))")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        out["Metrics over nights"] = _svg(fig)
    stages = s.get("nightly", {}).get("stages", {})
    timed = {k: v["seconds"] for k, v in stages.items() if isinstance(v, dict) and "seconds" in v}
    if timed:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.barh(list(timed), list(timed.values())), ax.set_xlabel("seconds"), ax.set_title("Time per stage")
        out["Time per stage"] = _svg(fig)
    return out


# ---- render -------------------------------------------------------------------------------------
def _get(d: Any, path: str) -> Any:
    for part in path.split("/"):
        d = d.get(part) if isinstance(d, dict) else None
    return d


# headline cards: (label, stage, path in its summary, how shown); the change is against the previous night
CARDS = (
    ("catalog items", "ingest", "catalog/kept", "count"),
    ("events kept", "ingest", "events/kept", "count"),
    ("records rejected", "ingest", None, "count"),
    ("user ndcg@10", "evaluate", "ranking/user/ndcg@10", "rate"),
    ("session ndcg@10", "evaluate", "ranking/session/ndcg@10", "rate"),
    ("search ndcg@10", "evaluate", "ranking/query/ndcg@10", "rate"),
    (
        "tonight's descriptions published as generated",
        "evaluate",
        "descriptions/all/published_generated_share",
        "share",
    ),
    ("catalog with a model description", "evaluate", "descriptions/catalog_model_share", "share"),
    ("run time before the report", "nightly", None, "seconds"),
)


def _rejected(ingest: dict) -> int | None:
    counts = [
        sum(v["rejected"].values()) if isinstance(v.get("rejected"), dict) else v.get("rejected") or 0
        for v in ingest.values()
        if isinstance(v, dict) and "read" in v
    ]
    return sum(counts) if counts else None


def _stage_seconds(nightly: dict) -> float | None:
    """Seconds of the stages run tonight so far (the report is written before the run's own total)."""
    times = [v["seconds"] for v in nightly.get("stages", {}).values() if isinstance(v, dict) and "seconds" in v]
    return sum(times) if times else None


def card_value(summaries: dict, stage: str, path: str | None):
    if stage == "ingest" and path is None:
        return _rejected(summaries.get("ingest", {}))
    if stage == "nightly" and path is None:
        return _stage_seconds(summaries.get("nightly", {}))
    return _get(summaries.get(stage, {}), path)


def _show(v, how: str) -> str:
    if v is None:
        return "n/a"
    return {"count": f"{v:,.0f}", "rate": f"{v:.4f}", "share": f"{v:.1%}", "seconds": f"{v:,.0f} s"}[how]


def _change(now, before, how: str) -> str:
    if now is None:
        return "not measured tonight"
    if before is None:
        return "not measured the night before"
    d = now - before
    if how == "share":
        return f"{d * 100:+.1f} pts"
    return {"count": f"{d:+,.0f}", "rate": f"{d:+.4f}", "seconds": f"{d:+,.0f} s"}[how]


def headline(report: dict[str, Any]) -> list[dict[str, str]]:
    """The cards: each figure of the night and its change since the previous night."""
    now, before = report["summaries"], report.get("previous_summaries") or {}
    cards = []
    for label, stage, path, how in CARDS:
        v, p = card_value(now, stage, path), card_value(before, stage, path) if before else None
        cards.append(
            {"label": label, "value": _show(v, how), "change": _change(v, p, how) if before else "first night"}
        )
    version = _get(now, "evaluate/model_version") or _get(now, "train/version") or "n/a"
    start = _get(now, "train/start") or ""
    cards.append({"label": "model", "value": version, "change": start})
    return cards


def _cards_html(cards: list[dict[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="label">{html.escape(c["label"])}</div>'
            f'<div class="value">{html.escape(c["value"])}</div>'
            f'<div class="change">{html.escape(c["change"])}</div></div>'
            for c in cards
        )
        + "</div>"
    )


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(c, r.get(c, "")) for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(column: str, v: Any) -> str:
    if column == "raw":  # a record as the feed had it: shown as code, not as a value
        return f'<td class="raw"><code>{html.escape(_fmt(v))}</code></td>'
    return f"<td>{html.escape(_fmt(v))}</td>"


def _fmt(v: Any) -> str:
    """A cell: numbers rounded, a mapping as `key: value` pairs, a list as its items; never raw JSON."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) or "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v[:10]) + (f" … ({len(v)} in all)" if len(v) > 10 else "")
    return str(v)


def ingest_rows(ingest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for src, v in ingest.items():
        if isinstance(v, dict) and "read" in v:
            rejected = v.get("rejected", {})
            n_rej = sum(rejected.values()) if isinstance(rejected, dict) else rejected
            rows.append(
                {
                    "source": src,
                    "read": v.get("read"),
                    "kept": v.get("kept"),
                    "deduplicated": v.get("deduplicated", 0),
                    "rejected": n_rej,
                    "reasons": ", ".join(f"{k}: {n}" for k, n in sorted(rejected.items()))
                    if isinstance(rejected, dict)
                    else "",
                }
            )
    return rows


TRAIN_FIELDS = {  # report label -> train summary field
    "model version": "version",
    "start": "start",
    "steps": "steps",
    "best step": "best_step",
    "best selection score": "best_selection_score",
    "best valid ndcg@10": "best_valid_ndcg@10",
    "stopped early": "stopped_early",
    "wall s": "wall_s",
    "tokens/s": "tokens_per_s",
    "parameters": "params",
    "training rows": "train_rows",
    "device": "device",
    "processes": "processes",
}


def train_rows(train: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"field": label, "value": train.get(key)} for label, key in TRAIN_FIELDS.items() if key in train]
    best = train.get("best_valid") or {}
    rows += [{"field": f"best valid {k}", "value": v} for k, v in best.items() if isinstance(v, (int, float))]
    blend = train.get("query_blend") or {}
    if blend:
        rows.append({"field": "search: BM25 weight (fitted on valid)", "value": blend.get("lexical_weight")})
    return rows


def ranking_rows(evaluate: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"scope": scope, **{k: v for k, v in figures.items() if not isinstance(v, dict)}}
        for scope, figures in (evaluate.get("ranking") or {}).items()
        if isinstance(figures, dict)
    ]


def prepare_rows(prepare: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per split: examples of each kind, tokens and shards."""
    rows = []
    for split, kinds in (prepare.get("rows") or {}).items():
        rows.append(
            {
                "split": split,
                **(kinds if isinstance(kinds, dict) else {}),
                "tokens": _get(prepare, f"tokens/{split}"),
                "shards": _get(prepare, f"shards/{split}"),
            }
        )
    return rows


def score_rows(score: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [
        {
            "output": f"recommendations: {scope}",
            "scored": v.get("scored"),
            "skipped": v.get("skipped"),
            "short of top-K": v.get("short_of_k"),
        }
        for scope, v in (score.get("recommendations") or {}).items()
    ]
    d = score.get("descriptions") or {}
    if d:
        rows.append(
            {
                "output": "descriptions",
                "scored": d.get("generated"),
                "skipped": f"carried over: {d.get('carried_over', 0)}",
                "short of top-K": "",
                "fallbacks": d.get("fallbacks"),
                "fallback reasons": d.get("fallback_reasons_new"),
            }
        )
    return rows


def _img(images: dict[str, str], title: str) -> str:
    if title not in images:
        return ""
    return f'<figure class="plot" aria-label="{html.escape(title)}">{images[title]}</figure>'


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:left;vertical-align:top;font-size:13px}th{background:#f3f3f3}figure.plot{margin:.5em 0}"
    "figure.plot svg{max-width:100%;height:auto;display:block}"
    ".cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px;margin:1em 0}"
    ".card{border:1px solid #ddd;border-radius:6px;padding:8px 10px;background:#fafafa}"
    ".card .label{font-size:12px;color:#666}.card .value{font-size:22px;font-weight:600;margin:2px 0}"
    ".card .change{font-size:12px;color:#555}td.raw{word-break:break-all;font-size:11px;max-width:420px}"
)


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    s = report["summaries"]
    evaluate = s.get("evaluate", {})
    previous = report.get("previous_date")
    parts = [
        f"<h1>shopllm nightly report — {html.escape(report['date'])}</h1>",
        f"<p>Changes are against {html.escape(previous) if previous else 'nothing: this is the first night'}.</p>",
        _cards_html(headline(report)),
        "<h2>Trends over nights</h2>",
        _img(images, "Metrics over nights"),
        "<h2>Input: records read, kept and rejected</h2>",
        _table(ingest_rows(s.get("ingest", {}))),
        _img(images, "Rejects by reason"),
        "<h3>Rejected records: one example per reason</h3>",
        _table(report.get("reject_examples", [])),
        "<h2>Recommendations</h2>",
        _table(ranking_rows(evaluate)),
        "<h3>Most recommended items (user scope)</h3>",
        _table(report["top_items"]),
        "<h2>Descriptions</h2>",
        _table(description_quality_rows(evaluate)),
        "<h3>Ten published at random, beside their attributes and flags</h3>",
        _table(evaluate.get("descriptions", {}).get("examples") or report["sample_descriptions"]),
        "<h3>Fallbacks: the model's text the gate rejected, and why (the first five)</h3>",
        _table(report.get("fallback_examples", [])),
        "<h2>Training</h2>",
        _img(images, "Training loss"),
        _img(images, "Validation ndcg@10"),
        _table(train_rows(s.get("train", {}))),
        "<h2>Prepare</h2>",
        _table(prepare_rows(s.get("prepare", {}))),
        "<h2>Scoring</h2>",
        _table(score_rows(s.get("score", {}))),
        "<h2>Time per stage</h2>",
        _img(images, "Time per stage"),
        _table([{"stage": k, **v} for k, v in s.get("nightly", {}).get("stages", {}).items()]),
    ]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>shopllm report {html.escape(report['date'])}"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )


def write_report(out: str, date: str) -> str:
    """Publish reports/dt=D/{report.json,report.html} atomically; returns where report.html is."""
    report = collect(out, date)
    images = plots(report)
    report["plots"] = sorted(images)
    with storage.publishing(out, schemas.REPORTS, date) as tmp:
        storage.write_json(storage.join(tmp, "report.json"), report)
        storage.write_text(storage.join(tmp, "report.html"), render_html(report, images))
    return storage.committed_file(storage.partition_dir(out, schemas.REPORTS, date), "report.html")
