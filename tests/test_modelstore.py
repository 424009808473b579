"""models/<version>/, models/LATEST and vocab/ on a local disk and on S3 (moto): committed folders, written
whole, read back through the storage layer; a local model saved before `_SUCCESS` existed still loads."""

from __future__ import annotations

import pytest
import torch

from shopllm import modelstore, storage
from shopllm.model import GPT, GPTConfig
from shopllm.tokenizer import TextTokenizer
from shopllm.vocab import ItemVocab, file_in


def tiny_gpt(n_text: int, n_items: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_text=n_text, n_items=n_items, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0))


def save_version(out: str, version: str, seed: int = 0) -> tuple[GPT, TextTokenizer]:
    """A tokenizer under out/vocab/ and a random model saved as `version`."""
    tk = TextTokenizer.train(["wireless earbuds", "蓝牙 耳机"] * 3, vocab_size=80, min_frequency=1)
    tok_path = tk.save(storage.join(out, "vocab", "tokenizer.json"))
    items = ItemVocab([f"item{i}" for i in range(5)])
    model = tiny_gpt(tk.n_text, len(items), seed)
    folder = modelstore.save(out, version, model, tokenizer_json=tok_path, items=items, metrics={"steps": 3})
    assert folder == modelstore.model_dir(out, version) and isinstance(folder, str)
    return model, tk


def assert_same_weights(a: GPT, b: GPT) -> None:
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def check_round_trip(out: str) -> None:
    model, tk = save_version(out, "v2024-01-01")
    assert modelstore.exists(out, "v2024-01-01") and not modelstore.exists(out, "v2024-01-02")
    assert storage.is_published(modelstore.model_dir(out, "v2024-01-01"))
    loaded = modelstore.load(out, "v2024-01-01")
    assert loaded.version == "v2024-01-01" and loaded.metrics == {"steps": 3} and len(loaded.items) == 5
    assert isinstance(loaded.tokenizer_path, str)
    assert TextTokenizer.load(loaded.tokenizer_path).encode("蓝牙 耳机") == tk.encode("蓝牙 耳机")
    assert_same_weights(loaded.model, model)
    folder = modelstore.model_dir(out, "v2024-01-01")  # what jobs/score.py and pipelines/score.py read
    assert ItemVocab.load(folder).items == loaded.items.items
    assert modelstore.load_config(folder)["model"]["n_items"] == 5
    assert modelstore.load_folder(folder).version == "v2024-01-01"

    assert modelstore.latest_version(out) is None
    assert modelstore.warm_start_version(out, "2024-01-02") == "v2024-01-01"
    assert modelstore.warm_start_version(out, "2024-01-01") is None  # never its own model
    with pytest.raises(FileNotFoundError):
        modelstore.set_latest(out, "v2024-01-02")
    modelstore.set_latest(out, "v2024-01-01")
    assert modelstore.latest_version(out) == "v2024-01-01"

    rerun, _ = save_version(out, "v2024-01-01", seed=7)  # a rerun replaces the version whole
    assert_same_weights(modelstore.load(out, "v2024-01-01").model, rerun)


def test_model_folder_round_trip_on_local_disk(tmp_path):
    check_round_trip(str(tmp_path / "out"))
    names = storage.list_names(str(tmp_path / "out" / "models"))
    assert names == ["LATEST", "v2024-01-01"]  # no staging folder left behind


def test_model_folder_round_trip_on_s3(s3):
    check_round_trip("s3://shop/x")
    assert "x/models/LATEST" in s3.keys("shop", "x/models/")


def test_a_model_saved_before_success_markers_still_loads(tmp_path):
    out = str(tmp_path / "out")
    model, _ = save_version(out, "v2024-01-01")
    storage.delete(storage.join(modelstore.model_dir(out, "v2024-01-01"), storage.SUCCESS))
    assert modelstore.exists(out, "v2024-01-01")
    assert modelstore.warm_start_version(out, "2024-01-02") == "v2024-01-01"
    assert_same_weights(modelstore.load(out, "v2024-01-01").model, model)


def test_an_uncommitted_version_on_s3_is_not_a_model(s3):
    out = "s3://shop/x"
    save_version(out, "v2024-01-01")
    folder = modelstore.model_dir(out, "v2024-01-02")
    tmp = storage.staging_dir(folder)  # a run killed while writing its model
    storage.write_bytes(storage.join(tmp, modelstore.WEIGHTS_FILE), b"partial")
    assert not modelstore.exists(out, "v2024-01-02")
    assert modelstore.warm_start_version(out, "2024-01-03") == "v2024-01-01"
    with pytest.raises(FileNotFoundError):
        modelstore.load(out, "v2024-01-02")


def test_vocab_files_on_s3(s3):
    vocab = "s3://shop/x/vocab"
    assert ItemVocab.load_or_empty(vocab).items == []
    ItemVocab(["b", "a"]).save(vocab)
    assert ItemVocab.load(vocab).items == ["b", "a"]
    tk = TextTokenizer.train(["a red cotton shirt"] * 3, vocab_size=60, min_frequency=1)
    uri = tk.save(storage.join(vocab, "tokenizer.json"))
    assert uri == "s3://shop/x/vocab/tokenizer.json" and file_in(vocab, "tokenizer.json") == uri
    assert TextTokenizer.load(uri).encode("red shirt") == tk.encode("red shirt")
