"""The joint vocabulary: `[special tokens][text BPE tokens][item tokens]`.

Special tokens take ids 0..len(SPECIAL_TOKENS)-1 inside the BPE tokenizer, so the text part is the
tokenizer's whole vocabulary (`n_text`). Item `i` of the item vocabulary has token id `n_text + i`.
The item vocabulary is append-only: a later night adds new items at the end and never renumbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shopllm import storage

PAD, BOS, EOS, HIST, QUERY, REC, ATTR, DESC, SEP = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<hist>",
    "<query>",
    "<rec>",
    "<attr>",
    "<desc>",
    "<sep>",
)
SPECIAL_TOKENS = [PAD, BOS, EOS, HIST, QUERY, REC, ATTR, DESC, SEP]
SPECIAL_ID = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
PAD_ID = SPECIAL_ID[PAD]
BOS_ID = SPECIAL_ID[BOS]
EOS_ID = SPECIAL_ID[EOS]
HIST_ID = SPECIAL_ID[HIST]
QUERY_ID = SPECIAL_ID[QUERY]
REC_ID = SPECIAL_ID[REC]
ATTR_ID = SPECIAL_ID[ATTR]
DESC_ID = SPECIAL_ID[DESC]
SEP_ID = SPECIAL_ID[SEP]

ITEM_VOCAB_FILE = "item_vocab.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass
class ItemVocab:
    """Append-only mapping item_id <-> item index (token id = n_text + index)."""

    items: list[str]

    def __post_init__(self):
        self.index = {item: i for i, item in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise ValueError("item vocabulary has duplicate item ids")

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.index

    def extend(self, item_ids: Iterable[str]) -> int:
        """Append the ids not yet known, in sorted order (deterministic); return how many were added."""
        new = sorted({i for i in item_ids if i not in self.index})
        for item in new:
            self.index[item] = len(self.items)
            self.items.append(item)
        return len(new)

    def token_id(self, item_id: str, n_text: int) -> int:
        return n_text + self.index[item_id]

    def token_ids(self, item_ids: Sequence[str], n_text: int) -> list[int]:
        return [n_text + self.index[i] for i in item_ids]

    def item_of(self, token_id: int, n_text: int) -> str:
        return self.items[token_id - n_text]

    def save(self, folder: str | os.PathLike) -> str:
        """Write folder/item_vocab.json (a local folder or a URI) in one atomic write; returns where."""
        uri = storage.join(os.fspath(folder), ITEM_VOCAB_FILE)
        storage.write_text(uri, json.dumps({"items": self.items}, ensure_ascii=False))
        return uri

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ItemVocab:
        """The vocabulary of `vocab/` or of a committed model folder (FileNotFoundError when it has none)."""
        return cls.read(file_in(folder, ITEM_VOCAB_FILE))

    @classmethod
    def read(cls, uri: str) -> ItemVocab:
        """The vocabulary in one item_vocab.json file (a local path or a URI)."""
        return cls(list(storage.read_json(uri)["items"]))

    @classmethod
    def load_or_empty(cls, folder: str | os.PathLike) -> ItemVocab:
        try:
            return cls.load(folder)
        except FileNotFoundError:
            return cls([])


def file_in(folder: str | os.PathLike, filename: str) -> str:
    """Where `filename` of `folder` is read from: the committed copy when the folder is committed (a model
    version: on object storage its files sit under the committed attempt), else folder/filename (`vocab/`,
    or a local model folder saved before models had a `_SUCCESS` marker)."""
    folder = os.fspath(folder)
    if storage.is_published(folder):
        return storage.committed_file(folder, filename)
    return storage.join(folder, filename)
