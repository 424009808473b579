"""shopllm train: train (or warm-start) the transformer on tokens/ into models/v<date>/.

    shopllm train --out DIR [--date D] [--config F] [--full-retrain] [--max-steps N] [--max-minutes M]
    torchrun --nproc_per_node=N -m jobs.train --out DIR ...      (DDP: gloo on CPU, NCCL on GPU)

A killed run resumes from checkpoints/dt=D/train.pt when rerun with the same data and settings.
Training does not move models/LATEST: the score stage does, once that version's scores are published.
`--out` may be a local folder or a URI (s3://…): every rank reads the shards and the checkpoint through
`shopllm.storage`, rank 0 alone writes the checkpoint, the evaluation log and the model.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import sys
from dataclasses import replace

import torch

from shopllm import config as config_mod
from shopllm import modelstore, storage
from shopllm.config import TrainConfig
from shopllm.data import TokenStream, read_eval_rows
from shopllm.devices import resolve_device
from shopllm.errors import InputError, ShopllmError
from shopllm.evaluation import description_perplexity, fit_query_blend
from shopllm.evaluation import fixed_sample as sample_indices
from shopllm.lexical import item_text
from shopllm.metrics import evaluate_rows
from shopllm.model import GPT, GPTConfig
from shopllm.ranking import Ranker
from shopllm.schemas import CURATED_ITEMS, TOKENS, TOKENS_SCHEMA, VOCAB_DIR
from shopllm.tokenizer import TextTokenizer
from shopllm.trainer import Trainer
from shopllm.vocab import TOKENIZER_FILE, ItemVocab

log = logging.getLogger("shopllm.train")

CHECKPOINTS = "checkpoints"  # checkpoints/dt=D/train.pt and evals.jsonl: working state, not a product


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.cli import add_common

    add_common(p)
    p.add_argument("--full-retrain", action="store_true", help="ignore the latest model; train from scratch")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides train.max_steps)")
    p.add_argument("--max-minutes", type=float, help="wall-time limit (overrides train.max_minutes)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    p.add_argument("--no-resume", action="store_true", help="ignore a checkpoint left by an earlier run")


def train_config(args) -> TrainConfig:
    cfg = config_mod.load(args.config).train
    cfg = config_mod.replace(cfg, max_steps=args.max_steps, max_minutes=args.max_minutes)
    if args.full_retrain:
        cfg = replace(cfg, full_retrain=True)
    return cfg


def setup_distributed(device_flag: str | None) -> tuple[str, int, int]:
    """(device, rank, world size); initialises the process group when launched by torchrun."""
    use_cuda = resolve_device(device_flag) == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return ("cuda" if use_cuda else "cpu"), 0, 1
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return (f"cuda:{local_rank}" if use_cuda else "cpu"), dist.get_rank(), world


def teardown_distributed(wait_for_peers: bool = True) -> None:
    """Destroy the process group, if there is one. After a run that finished, the ranks first wait for each
    other: a gloo rank that tears down while its peer still works can abort the peer. The DDP wrapper sits
    in reference cycles, so it is collected first, while its process group still exists."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait_for_peers:
        dist.barrier()
    gc.collect()
    dist.destroy_process_group()


def build_model(
    cfg: TrainConfig, tokenizer: TextTokenizer, n_items: int, out: str, date: str
) -> tuple[GPT, str | None, str]:
    """The model to train, warm-started from an earlier night's model where possible; (model, from version, why)."""
    m = cfg.model
    n_text = tokenizer.n_text
    fresh = GPT(GPTConfig.of(m, n_text, n_items))
    latest = modelstore.warm_start_version(out, date)
    if cfg.full_retrain:
        return fresh, None, "full retrain asked for"
    if latest is None:
        return fresh, None, "no earlier model"
    loaded = modelstore.load(out, latest)
    old, oc = loaded.model, loaded.model.config
    if n_text < oc.n_text or not extends(TextTokenizer.load(loaded.tokenizer_path), tokenizer):
        return fresh, None, f"tokenizer changed (n_text {oc.n_text} -> {n_text}): earlier weights do not fit"
    shape = ("n_layer", "n_head", "n_embd", "block_size", "tie_items")
    if [getattr(oc, k) for k in shape] != [getattr(m, k) for k in shape]:
        return fresh, None, f"model shape changed in the config: {latest} does not fit"
    if n_items < oc.n_items:
        return fresh, None, f"item vocabulary shrank ({oc.n_items} -> {n_items}); it should only grow"
    grown = old.with_vocab(n_text, n_items)
    model = GPT(replace(grown.config, dropout=m.dropout))
    model.load_state_dict(grown.state_dict())
    more = f", +{n_text - oc.n_text} slot tokens" if n_text > oc.n_text else ""
    return model, latest, f"warm start from {latest} (+{n_items - oc.n_items} items{more})"


def extends(old: TextTokenizer, new: TextTokenizer) -> bool:
    """Whether `new` is `old` with tokens appended (every id of `old` means the same token in `new`)."""
    new_vocab = new.tk.get_vocab(with_added_tokens=True)
    return all(new_vocab.get(token) == i for token, i in old.tk.get_vocab(with_added_tokens=True).items())


def loss_kwargs(cfg: TrainConfig, n_items: int = 0) -> dict:
    kw = {}
    if cfg.sampled_negatives and n_items > cfg.sampled_softmax_above:  # a large catalog: sampled softmax
        kw["sampled_negatives"] = cfg.sampled_negatives
    if cfg.label_smoothing:
        kw["label_smoothing"] = cfg.label_smoothing
    if cfg.future_items > 1:
        kw.update(future_items=cfg.future_items, future_weight=cfg.future_weight)
    if cfg.mask_seen_items:
        kw["mask_seen_items"] = True
    return kw


def fingerprint(cfg: TrainConfig, files: list[str], model: GPT, warm_from: str | None) -> str:
    """What a checkpoint must match to be resumed: data files, settings, model shape, starting point."""
    settings = config_mod.to_dict(replace(cfg, max_minutes=0.0))
    parts = [json.dumps(settings, sort_keys=True), json.dumps(model.config.to_dict(), sort_keys=True), str(warm_from)]
    parts += [f"{_relative(f)}:{storage.size(f)}" for f in files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _relative(shard: str) -> str:
    """A shard's path inside its partition (on object storage it names the committed attempt, so a rerun of
    prepare changes the fingerprint even when the sizes come out the same)."""
    return shard.rsplit("/dt=", 1)[-1]


def run(args, beam_args=()) -> int:
    run_train(args.out, args.date, train_config(args), device=args.device, resume=not args.no_resume)
    return 0


def run_train(out: str, date: str, cfg: TrainConfig, *, device: str | None = None, resume: bool = True) -> None:
    """The stage: train (or warm-start) on tokens/*/dt=date and save models/v<date>/ and the train summary.
    Under torchrun every rank calls it; rank 0 writes. device None: CUDA when there is one."""
    vocab_dir = storage.join(out, VOCAB_DIR)
    tokenizer_path = storage.join(vocab_dir, TOKENIZER_FILE)
    if not storage.exists(tokenizer_path):
        raise InputError(f"{tokenizer_path} not found; run `shopllm prepare` first")
    try:
        train_files = storage.partition_files(out, f"{TOKENS}/train", date)
    except FileNotFoundError as e:
        raise InputError(f"{e}") from None
    if not train_files:
        raise InputError(f"no training shards in {storage.partition_dir(out, f'{TOKENS}/train', date)}")
    tokenizer = TextTokenizer.load(tokenizer_path)
    items = ItemVocab.load(vocab_dir)
    device, rank, world = setup_distributed(device)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model, warm_from, why = build_model(cfg, tokenizer, len(items), out, date)
    if rank == 0:
        log.info(
            "%s; %.2fM parameters, %d items, device %s, %d process(es)",
            why,
            model.num_params() / 1e6,
            len(items),
            device,
            world,
        )
    stream = TokenStream(
        train_files, cfg.batch_size, model.config.block_size, seed=cfg.seed, rank=rank, world_size=world
    )
    evaluate = valid_evaluator(out, date, cfg, device)
    work = storage.partition_dir(out, CHECKPOINTS, date)
    fp = fingerprint(cfg, train_files, model, warm_from)
    trainer = Trainer(
        model,
        cfg,
        stream,
        evaluate=evaluate,
        score_key=SELECTION_KEY,
        checkpoint_path=storage.join(work, "train.pt"),
        metrics_path=storage.join(work, "evals.jsonl"),
        device=device,
        log_every=cfg.log_every,
        loss_kwargs=loss_kwargs(cfg, model.config.n_items),
        fingerprint=fp,
    )
    if rank == 0 and not (resume and trainer.resumable()):
        storage.delete(storage.join(work, "evals.jsonl"))  # a fresh run starts a fresh curve
    result = trainer.run(resume=resume)
    if rank == 0:
        save_outputs(
            out,
            date,
            cfg,
            trainer.model,
            result,
            tokenizer_path,
            items,
            warm_from,
            why,
            world,
            device,
            len(stream.files),
            stream.n_rows,
        )


def fixed_sample(rows, n: int, seed: int):
    """n of the ranking prompts of EvalRows `rows`, the same ones at every evaluation (all when n is 0 or
    there are no more), so an evaluation costs the same at any shop size; the text sequences stay whole."""
    if not n or len(rows) <= n:
        return rows
    keep = sample_indices(range(len(rows)), n, seed)
    return replace(
        rows,
        prompts=[rows.prompts[i] for i in keep],
        kinds=[rows.kinds[i] for i in keep],
        targets=rows.targets[keep],
        histories=[rows.histories[i] for i in keep],
    )


def valid_evaluator(out: str, date: str, cfg: TrainConfig, device: str):
    try:
        files = storage.partition_files(out, f"{TOKENS}/valid", date)
    except FileNotFoundError:
        log.warning("no valid split for %s: training without evaluation or early stopping", date)
        return None
    rows = read_eval_rows(files)
    if len(rows) == 0 and not rows.sequences:
        log.warning("the valid split is empty: training without evaluation or early stopping")
        return None
    described = [list(map(int, s)) for s in rows.sequences]
    rows = fixed_sample(rows, cfg.valid_users, cfg.seed)

    def evaluate(model) -> dict:
        metrics = evaluate_rows(model, rows, batch_size=cfg.eval_batch_size, device=device)
        ppl = description_perplexity(model, described, batch_size=cfg.eval_batch_size, device=device)
        if ppl is not None:
            metrics["describe_ppl"] = ppl
        metrics[SELECTION_KEY] = selection_score(metrics)
        return metrics

    return evaluate


SELECTION_KEY = "selection_score"


def selection_score(metrics: dict) -> float | None:
    """What the kept checkpoint is chosen on (and early stopping watches): ranking and description quality
    alike, the mean of valid ndcg@10 and 1 / perplexity of the held-out descriptions (their tokens'
    geometric-mean probability), each in [0, 1]; the one present when the other is missing."""
    parts = [metrics[k] for k in ("ndcg@10",) if metrics.get(k) is not None]
    if metrics.get("describe_ppl"):
        parts.append(1.0 / metrics["describe_ppl"])
    return sum(parts) / len(parts) if parts else None


def query_blend(out, date, model, tokenizer_path, items, device) -> dict | None:
    """The weight of BM25 in the query scope's scores (shopllm.lexical), fitted on the valid split's
    searches over the date's catalog; None (no blend) without valid searches or a catalog."""
    try:
        valid = storage.read_partition(out, f"{TOKENS}/valid", date, TOKENS_SCHEMA).to_pylist()
        catalog = storage.read_partition(out, CURATED_ITEMS, date).to_pylist()
    except FileNotFoundError as e:
        log.warning("query blend not fitted: %s", e)
        return None
    model.eval()
    ranker = Ranker(
        model,
        TextTokenizer.load(tokenizer_path),
        items,
        [r["item_id"] for r in catalog],
        device,
        item_texts={r["item_id"]: item_text(r) for r in catalog},
    )
    fitted = fit_query_blend(ranker, valid)
    if fitted:
        log.info(
            "query blend: BM25 weight %s (valid ndcg@10 by weight %s, %d searches)",
            fitted["lexical_weight"],
            fitted["valid_ndcg@10_by_weight"],
            fitted["valid_searches"],
        )
    return fitted


def downsample(values: list[float], points: int = 200) -> list[list[float]]:
    """[[step, value], ...] with at most `points` points (means of equal windows) for the report."""
    if not values:
        return []
    w = max(1, -(-len(values) // points))
    return [
        [min(i + w, len(values)), sum(values[i : i + w]) / len(values[i : i + w])] for i in range(0, len(values), w)
    ]


def save_outputs(
    out, date, cfg, model, result, tokenizer_path, items, warm_from, why, world, device, n_files, n_rows
) -> None:
    version = modelstore.version_for(date)
    best = result.curve[[r["step"] for r in result.curve].index(result.best_step)] if result.best_step else {}
    summary = {
        "version": version,
        "steps": result.steps,
        "tokens": result.tokens,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "wall_s": round(result.wall_s, 2),
        "best_step": result.best_step,
        "best_valid": {k: v for k, v in best.items() if k not in ("step", "lr", "tokens", "elapsed_s")},
        "best_valid_ndcg@10": best.get("ndcg@10"),
        "best_selection_score": result.best_score,
        "stopped_early": result.stopped_early,
        "resumed_from_step": result.resumed_from,
        "warm_started": warm_from is not None,
        "warm_start_from": warm_from,
        "start": why,
        "processes": world,
        "device": device,
        "train_rows": n_rows,
        "train_files": n_files,
        "params": model.num_params(),
        "loss_curve": downsample(result.losses),
        "eval_curve": result.curve,
        "ndcg_curve": [[r["step"], r.get("ndcg@10")] for r in result.curve],
        "config": config_mod.to_dict(cfg),
    }
    blend = query_blend(out, date, model, tokenizer_path, items, device)
    summary["query_blend"] = blend
    modelstore.save(
        out,
        version,
        model,
        tokenizer_json=tokenizer_path,
        items=items,
        metrics=summary,
        extra_config={
            "train": config_mod.to_dict(cfg),
            "rank": {"lexical_weight": blend["lexical_weight"] if blend else 0.0},
        },
    )
    storage.write_json(storage.summary_path(out, date, "train"), summary)
    log.info(
        "saved %s: %d steps, best selection score %s at step %s (valid ndcg@10 %s), %.0f tokens/s",
        version,
        result.steps,
        f"{result.best_score:.4f}" if result.best_score is not None else "n/a",
        result.best_step,
        f"{best['ndcg@10']:.4f}" if best.get("ndcg@10") is not None else "n/a",
        result.tokens_per_s,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m jobs.train` / `torchrun -m jobs.train`: the same flags as `shopllm train`."""
    p = argparse.ArgumentParser(prog="jobs.train", description="train the shopllm transformer")
    add_arguments(p)
    args, rest = p.parse_known_args(argv)
    storage.configure(storage.StorageOptions.from_beam_args(rest))  # --s3_endpoint_url etc., as `shopllm train`
    if unknown := storage.without_storage_flags(rest):
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    finished = False
    try:
        rc = run(args)
        finished = True
        return rc
    except ShopllmError as e:
        print(f"shopllm train: error: {e}", file=sys.stderr)
        return 2
    finally:
        teardown_distributed(wait_for_peers=finished)


if __name__ == "__main__":
    raise SystemExit(main())
