"""Descriptions a shop would publish: the night's generated descriptions, checked, on each shop.

    python -m benchmarks.describe_bench [--quick] [--shops sample,other] [--work bench_out/shops]

For each shop (benchmarks.shops: the sample, and a second synthetic shop with other categories, keys and
voice) the nightly job runs with its defaults; the figures are those `shopllm evaluate` computes from
that night's scores/descriptions (shopllm.evaluation.description_quality), per language and in all:

- published: share of items whose published description is the model's text (not the fallback);
- contradiction / wrong_brand / wrong_model / misbinding before the gate: share of the model's texts (before the gate)
  with that error (shopllm.faithfulness), and any blocking error after it (must be 0);
- coverage: mean share of the keys the shop's descriptions usually name that the model's text names;
- distinct-2 of the published generated texts;
- generation tokens/s: new tokens per second of the model generating descriptions for up to 256 items
  (batches of 64, greedy, KV cache, the nightly's decoding settings), timed here after the run.

Targets: published >= 0.90, contradiction before the gate <= 0.01, blocking errors after it 0.
Writes bench_out/describe.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks import shops
from shopllm import config as config_mod
from shopllm import modelstore, storage
from shopllm.describe import Describer, request_of
from shopllm.faithfulness import Lexicon
from shopllm.schemas import CURATED_ITEMS
from shopllm.tokenizer import TextTokenizer

TARGETS = {"published": 0.90, "contradiction_before_gate": 0.01}
LINE = (
    "published",
    "contradiction_before_gate",
    "wrong_brand_before_gate",
    "wrong_model_before_gate",
    "misbinding_before_gate",
    "blocking_after_gate",
    "coverage",
    "distinct-2",
)


def figures(quality: dict) -> dict:
    """The benchmark's line of one language's description_quality entry."""
    before, after = quality.get("before_gate", {}), quality.get("after_gate", {})
    return {
        "items": quality.get("items"),
        "published": quality.get("published_generated_share"),
        **{
            f"{k}_before_gate": before.get(f"{k}_rate")
            for k in ("contradiction", "wrong_brand", "wrong_model", "misbinding")
        },
        "blocking_after_gate": after.get("any_blocking_rate"),
        "coverage": before.get("coverage"),
        "distinct-2": quality.get("distinct-2"),
        "fallback_reasons": quality.get("fallback_reasons"),
    }


def generation_speed(out: Path, items: int = 256, batch: int = 64) -> dict:
    """New tokens per second generating descriptions with the published model, as the score stage does."""
    loaded = modelstore.load(out, modelstore.latest_version(out), "cpu")
    rows = storage.read_partition(out, CURATED_ITEMS, shops.DATE).to_pylist()
    score_cfg = config_mod.Config().score
    describer = Describer(
        loaded.model,
        TextTokenizer.load(loaded.tokenizer_path),
        loaded.items,
        max_new_tokens=score_cfg.max_new_tokens,
        no_repeat_ngram=score_cfg.no_repeat_ngram,
        lexicon=Lexicon.from_items(rows),
    )
    reqs = [request_of(r) for r in rows if r["item_id"] in loaded.items][:items]
    new_tokens, start = 0, time.perf_counter()
    for i in range(0, len(reqs), batch):
        chunk = reqs[i : i + batch]
        new_tokens += sum(len(t) + 1 for t in describer.generate_ids([describer.prompt(r) for r in chunk], chunk))
    seconds = time.perf_counter() - start
    return {
        "items": len(reqs),
        "new_tokens": new_tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(new_tokens / seconds, 1) if seconds else None,
    }


def bench_shop(out: Path) -> dict:
    evaluate = storage.read_json(storage.summary_path(str(out), shops.DATE, "evaluate"))
    quality = evaluate["descriptions"]
    return {
        "languages": {lang: figures(q) for lang, q in quality.items() if isinstance(q, dict) and "items" in q},
        "heldout_perplexity": quality.get("perplexity"),
        "generation": generation_speed(out),
        "examples": quality.get("examples", [])[:5],
    }


def _fmt(v) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


def print_shop(shop: str, r: dict) -> None:
    print(
        f"{shop}: held-out description perplexity {r['heldout_perplexity']}, generation "
        f"{r['generation']['tokens_per_s']} tokens/s ({r['generation']['items']} items)"
    )
    print(f"  {'lang':4} {'items':>5} " + " ".join(f"{k[:14]:>14}" for k in LINE))
    for lang, f in r["languages"].items():
        print(f"  {lang:4} {f['items']:5d} " + " ".join(f"{_fmt(f[k]):>14}" for k in LINE))
    print(f"  fallback reasons (all): {r['languages']['all']['fallback_reasons']}")
    for e in r["examples"][:3]:
        print(f"  e.g. [{e['language']}] {e['attributes']}\n       {e['description'][:160]}")


def main(argv=None) -> int:
    args = shops.parse_args(argv, __doc__, "bench_out/describe.json")
    results = {}
    for shop in args.shops.split(","):
        results[shop] = bench_shop(shops.nightly(shop, Path(args.work), quick=args.quick))
        print_shop(shop, results[shop])
    sample = results.get("sample", {}).get("languages", {}).get("all")
    if sample and not args.quick:
        print(
            f"sample targets: published {sample['published']:.3f} (>= {TARGETS['published']}), contradiction "
            f"before the gate {sample['contradiction_before_gate']:.3f} (<= {TARGETS['contradiction_before_gate']}), "
            f"blocking after the gate {sample['blocking_after_gate']:.3f} (0)"
        )
    shops.write_results(args, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
