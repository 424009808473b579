"""The run report: `reports/dt=D/report.json` and a self-contained `report.html` with embedded plots.

It reads what the stages left in `summaries/dt=D/*.json` and the published partitions; it computes no
new figures of its own, so the report never disagrees with the stages.
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import os
from pathlib import Path
from typing import Any

from shopllm import schemas, storage

STAGE_SUMMARIES = ("ingest", "prepare", "train", "score", "evaluate", "nightly")


# ---- collect ------------------------------------------------------------------------------------
def collect(out: str | os.PathLike, date: str) -> dict[str, Any]:
    try:
        items = storage.read_partition(out, schemas.CURATED_ITEMS, date).to_pandas()[["item_id", "title", "category"]]
    except FileNotFoundError:
        items = None
    summaries = {}
    for stage in STAGE_SUMMARIES:
        path = storage.summary_path(out, date, stage)
        if path.exists():
            summaries[stage] = storage.read_json(path)
    return {
        "date": date,
        "summaries": summaries,
        "metrics_history": metrics_history(out, date),
        "top_items": top_recommended_items(out, date, items),
        "sample_descriptions": sample_descriptions(out, date, items),
    }


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
    base = Path(out) / schemas.SUMMARIES
    for folder in sorted(base.glob("dt=*")) if base.is_dir() else []:
        d = folder.name[3:]
        path = folder / "evaluate.json"
        if d <= date and path.exists():
            rows.append({"date": d, **_numbers(storage.read_json(path))})
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


def sample_descriptions(out, date: str, items, n: int = 5) -> list[dict[str, Any]]:
    """The first published generated descriptions of the night (when evaluate has not run)."""
    try:
        descs = storage.read_partition(out, schemas.DESCRIPTIONS, date).to_pandas()
    except FileNotFoundError:
        return []
    if items is None:
        return []
    fresh = descs[descs.generated_dt == date] if "generated_dt" in descs else descs
    pick = fresh[~fresh.is_fallback.astype(bool)].sort_values("item_id").head(n)
    cols = ["item_id", "title", "language", "description", "is_fallback"]
    merged = pick.merge(items[["item_id", "title"]], on="item_id", how="left")
    return _records(merged[[c for c in cols if c in merged]])


QUALITY_COLUMNS = {  # report column -> (section of a language's figures, field)
    "items": (None, "items"), "published as generated": (None, "published_generated_share"),
    "contradiction (before gate)": ("before_gate", "contradiction_rate"),
    "wrong brand (before)": ("before_gate", "wrong_brand_rate"), "wrong model (before)": ("before_gate", "wrong_model_rate"),
    "misbinding (before)": ("before_gate", "misbinding_rate"),
    "unsupported (before)": ("before_gate", "unsupported_rate"),
    "any blocking (after gate)": ("after_gate", "any_blocking_rate"), "coverage (after)": ("after_gate", "coverage"),
    "distinct-2": (None, "distinct-2"), "fallback reasons": (None, "fallback_reasons"),
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
def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


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


def plots(report: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs by title."""
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
        out["Training loss"] = _png(fig)
    ndcg = {k: v for k, v in curves.items() if "ndcg" in k or k.startswith("hr@")}
    if ndcg:
        fig, ax = plt.subplots(figsize=(6, 3))
        for name, pts in sorted(ndcg.items()):
            ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xlabel("step"), ax.legend(), ax.set_title("Validation ranking")
        out["Validation ndcg@10"] = _png(fig)
    rejects = {src: v.get("rejected", {}) for src, v in s.get("ingest", {}).items()
               if isinstance(v, dict) and isinstance(v.get("rejected"), dict)}
    if any(rejects.values()):
        labels = [f"{src}:{r}" for src, rs in rejects.items() for r in sorted(rs)]
        values = [rs[r] for src, rs in rejects.items() for r in sorted(rs)]
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(labels) + 1))
        ax.barh(labels, values), ax.set_xlabel("records"), ax.set_title("Rejected records by reason")
        out["Rejects by reason"] = _png(fig)
    history = report["metrics_history"]
    keys = sorted({k for row in history for k in row if "ndcg@10" in k or k.endswith("hr@10")})
    if history and keys:
        fig, ax = plt.subplots(figsize=(6, 3))
        for k in keys:
            pts = [(datetime.date.fromisoformat(row["date"]), row[k]) for row in history if k in row]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        ax.set_title("Evaluation over nights"), ax.legend(fontsize=7), ax.tick_params(axis="x", rotation=30)
        out["Metrics over nights"] = _png(fig)
    stages = s.get("nightly", {}).get("stages", {})
    timed = {k: v["seconds"] for k, v in stages.items() if isinstance(v, dict) and "seconds" in v}
    if timed:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.barh(list(timed), list(timed.values())), ax.set_xlabel("seconds"), ax.set_title("Time per stage")
        out["Time per stage"] = _png(fig)
    return out


# ---- render -------------------------------------------------------------------------------------
def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        import json

        text = json.dumps(v, ensure_ascii=False, default=str)
        return text if len(text) < 300 else text[:297] + "..."
    return str(v)


def _kv(d: dict[str, Any]) -> str:
    scalar = [{"field": k, "value": v} for k, v in d.items() if not isinstance(v, list)]
    return _table(scalar)


def ingest_rows(ingest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for src, v in ingest.items():
        if isinstance(v, dict) and "read" in v:
            rejected = v.get("rejected", {})
            n_rej = sum(rejected.values()) if isinstance(rejected, dict) else rejected
            rows.append({"source": src, "read": v.get("read"), "kept": v.get("kept"),
                         "deduplicated": v.get("deduplicated", 0), "rejected": n_rej,
                         "reasons": ", ".join(f"{k}: {n}" for k, n in sorted(rejected.items())) if isinstance(rejected, dict) else ""})
    return rows


def render_html(report: dict[str, Any], images: dict[str, str]) -> str:
    s = report["summaries"]
    parts = [f"<h1>shopllm nightly report — {html.escape(report['date'])}</h1>"]
    parts.append("<h2>Input: records read, kept and rejected</h2>" + _table(ingest_rows(s.get("ingest", {}))))
    for title in ("Rejects by reason",):
        if title in images:
            parts.append(f'<img alt="{title}" src="data:image/png;base64,{images[title]}">')
    parts.append("<h2>Training</h2>")
    for title in ("Training loss", "Validation ndcg@10"):
        if title in images:
            parts.append(f'<img alt="{title}" src="data:image/png;base64,{images[title]}">')
    parts.append(_kv(s.get("train", {})))
    evaluate = s.get("evaluate", {})
    parts.append("<h2>Evaluation</h2>" + _kv(_numbers({k: v for k, v in evaluate.items() if k != "descriptions"})))
    if "Metrics over nights" in images:
        parts.append(f'<img alt="Metrics over nights" src="data:image/png;base64,{images["Metrics over nights"]}">')
    parts.append("<h2>Top recommended items (user scope)</h2>" + _table(report["top_items"]))
    parts.append("<h2>Description quality (shopllm.faithfulness)</h2>" + _table(description_quality_rows(evaluate)))
    examples = evaluate.get("descriptions", {}).get("examples") or report["sample_descriptions"]
    parts.append("<h2>Generated descriptions (ten published at random, beside their attributes)</h2>" + _table(examples))
    parts.append("<h2>Prepare</h2>" + _kv(s.get("prepare", {})))
    parts.append("<h2>Scoring</h2>" + _kv(s.get("score", {})))
    parts.append("<h2>Time per stage</h2>")
    if "Time per stage" in images:
        parts.append(f'<img alt="Time per stage" src="data:image/png;base64,{images["Time per stage"]}">')
    parts.append(_table([{"stage": k, **v} for k, v in s.get("nightly", {}).get("stages", {}).items()]))
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left;vertical-align:top;font-size:13px}th{background:#f3f3f3}img{max-width:100%;display:block}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>shopllm report {html.escape(report['date'])}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def write_report(out: str | os.PathLike, date: str) -> Path:
    """Publish reports/dt=D/{report.json,report.html} atomically; returns the partition folder."""
    report = collect(out, date)
    images = plots(report)
    report["plots"] = sorted(images)
    with storage.publishing(out, schemas.REPORTS, date) as tmp:
        storage.write_json(tmp / "report.json", report)
        (tmp / "report.html").write_text(render_html(report, images), encoding="utf-8")
    return storage.partition_dir(out, schemas.REPORTS, date)
