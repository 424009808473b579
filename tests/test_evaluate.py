"""The evaluate stage on the tiny shop: ranks checked against a hand computation with the model."""

from __future__ import annotations

import math

import pytest
import torch
from test_score_pipeline import DATE, VERSION, _item, tiny_model, write_curated, write_partition

from shopllm import modelstore, storage
from shopllm.config import ScoreConfig
from shopllm.schemas import TOKENS, TOKENS_SCHEMA
from shopllm.sequences import attribute_text, describe_sequence, history_prompt, search_prompt
from shopllm.tokenizer import TextTokenizer


def _hand_rank(model, prompt, target_tok, catalog_toks, masked_toks=()):
    """Rank of the target among catalog items, masked ones removed, ties pessimistic."""
    logp = model.next_item_logprobs(torch.tensor([prompt]))[0]
    n_text = model.config.n_text
    t = float(logp[target_tok - n_text])
    return 1 + sum(1 for c in catalog_toks if c != target_tok and c not in masked_toks and float(logp[c - n_text]) >= t)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from jobs.cli import main
    from jobs.score import run_score

    out = tmp_path_factory.mktemp("eval")
    items, _ = write_curated(out)
    tiny_model(out, items)
    run_score(str(out), DATE, VERSION, ScoreConfig(top_k=5, active_days=7, batch_size=8, max_new_tokens=8))
    lm = modelstore.load(out, VERSION)
    tok = TextTokenizer.load(lm.tokenizer_path)
    n = tok.n_text
    t = lambda i: lm.items.token_id(i, n)  # noqa: E731
    by_id = {i["item_id"]: i for i in items}
    attr = tok.encode(
        attribute_text(
            by_id["i01"]["title"], by_id["i01"]["category"], by_id["i01"]["brand"], by_id["i01"]["attributes"]
        )
    )
    rows = [
        {
            "kind": "history",
            "subject_id": "u1",
            "input_ids": history_prompt([t("i00"), t("i01"), t("i02")]),
            "target_item": "i03",
            "target_id": t("i03"),
            "history_ids": [t("i00"), t("i01"), t("i02")],
        },
        {
            "kind": "history",
            "subject_id": "u9",
            "input_ids": history_prompt([t("i04")]),
            "target_item": "gone-item",
            "target_id": t("gone-item"),
            "history_ids": [t("i04")],
        },
        {
            "kind": "search",
            "subject_id": "wireless headphones",
            "input_ids": search_prompt(tok.encode("wireless headphones")),
            "target_item": "i05",
            "target_id": t("i05"),
            "history_ids": [],
        },
        {
            "kind": "describe",
            "subject_id": "i01",
            "input_ids": describe_sequence(t("i01"), attr[:30], tok.encode("great sound, long battery"), 64),
            "target_item": "i01",
            "target_id": t("i01"),
            "history_ids": [],
        },
    ]
    write_partition(out, f"{TOKENS}/test", DATE, rows, TOKENS_SCHEMA)
    assert main(["evaluate", "--out", str(out), "--date", DATE]) == 0
    summary = storage.read_json(storage.summary_path(out, DATE, "evaluate"))
    catalog = [t(f"i{i:02d}") for i in range(12)]
    return summary, lm.model, t, tok, catalog, out


def test_user_scope_ranks_from_the_test_history(evaluated):
    s, model, t, _, catalog, _ = evaluated
    user = s["ranking"]["user"]
    r = _hand_rank(
        model, history_prompt([t("i00"), t("i01"), t("i02")]), t("i03"), catalog, {t("i00"), t("i01"), t("i02")}
    )
    # u1's rank r, and u9's target left the catalog: a miss at rank C + 1
    assert user["n"] == 2 and user["target_not_in_catalog"] == 1
    assert user["mrr"] == pytest.approx((1 / r + 1 / 13) / 2)
    assert user["hr@10"] == pytest.approx((r <= 10) / 2)
    assert user["ndcg@10"] == pytest.approx((1 / math.log2(r + 1) if r <= 10 else 0) / 2)


def test_session_and_query_scopes(evaluated):
    s, model, t, tok, catalog, _ = evaluated
    # sessions of the day: s2 = i04 -> i05 (evaluated); s5 has one known item; s3 none
    r = _hand_rank(model, history_prompt([t("i04")]), t("i05"), catalog, {t("i04")})
    assert s["ranking"]["session"]["n"] == 1 and s["ranking"]["session"]["mrr"] == pytest.approx(1 / r)
    q = _hand_rank(model, search_prompt(tok.encode("wireless headphones")), t("i05"), catalog)
    assert s["ranking"]["query"]["n"] == 1 and s["ranking"]["query"]["mrr"] == pytest.approx(1 / q)
    pub = s["ranking"]["query_published"]  # the query was scored (searched 3 times), top-5 published
    assert pub["n"] == 1 and pub["hr@10"] == (1.0 if q <= 5 else 0.0)


def test_each_scope_ranks_a_fixed_sample_of_at_most_max_prompts(evaluated, tmp_path):
    from jobs.cli import main

    s, model, t, _, catalog, out = evaluated
    config = tmp_path / "c.toml"
    config.write_text("[evaluate]\nmax_prompts = 1\n")
    runs = []
    for _ in range(2):
        assert main(["evaluate", "--out", str(out), "--date", DATE, "--config", str(config)]) == 0
        runs.append(storage.read_json(storage.summary_path(out, DATE, "evaluate"))["ranking"])
    assert runs[0] == runs[1]  # the same sample on a rerun
    user = runs[0]["user"]
    assert (user["n"], user["sampled_from"]) == (1, 2) and s["ranking"]["user"]["sampled_from"] == 2
    r = _hand_rank(
        model, history_prompt([t("i00"), t("i01"), t("i02")]), t("i03"), catalog, {t("i00"), t("i01"), t("i02")}
    )
    assert user["mrr"] in (pytest.approx(1 / r), pytest.approx(1 / 13))  # one of the two, ranked as before
    assert runs[0]["query"] == s["ranking"]["query"]  # scopes with no more cases than the cap are whole
    assert main(["evaluate", "--out", str(out), "--date", DATE]) == 0  # put back the default summary


def test_fixed_sample_keeps_order_and_is_stable():
    from shopllm.evaluation import fixed_sample

    cases = list(range(100))
    a = fixed_sample(cases, 10, "user")
    assert a == fixed_sample(cases, 10, "user") == sorted(a) and len(set(a)) == 10
    assert fixed_sample(cases, 0, "user") is cases and fixed_sample(cases, 100, "user") is cases


def test_description_metrics(evaluated):
    s, *_ = evaluated
    d = s["descriptions"]
    assert d["heldout_items"] == 1
    assert d["perplexity"] > 1.0 and math.isfinite(d["perplexity"])
    # a random model's text does not pass the gate: every item got the fallback, which names its attributes
    every = d["all"]
    assert every["items"] == 12 and every["published_generated_share"] == 0.0
    assert sum(every["fallback_reasons"].values()) == 12
    assert every["before_gate"]["n"] == 12 and every["after_gate"]["any_blocking_rate"] == 0.0
    assert every["after_gate"]["coverage"] in (None, 1.0)
    assert every["distinct-2"] is None and d["examples"] == []  # nothing generated was published
    assert d["catalog_model_share"] == 0.0  # no item of the catalog has the model's text
    assert {k for k in d if k not in ("heldout_items", "perplexity", "examples", "all", "catalog_model_share")} <= {
        "en",
        "zh",
    }


def test_missing_test_split_is_a_clear_error(tmp_path, capsys):
    from jobs.cli import main
    from jobs.score import run_score

    items, _ = write_curated(tmp_path, items=[_item(i) for i in range(4)])
    tiny_model(tmp_path, items)
    run_score(str(tmp_path), DATE, VERSION, ScoreConfig(top_k=2, batch_size=8, max_new_tokens=4))
    assert main(["evaluate", "--out", str(tmp_path), "--date", DATE]) == 2
    assert "tokens/test/dt=2024-05-10 is not published" in capsys.readouterr().err
