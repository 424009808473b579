"""The text part of the joint vocabulary: a byte-level BPE trained with HF `tokenizers`.

Byte-level means every string encodes with no unknown token and `decode(encode(t)) == t`. The special
tokens of `shopllm.vocab` take ids 0..S-1; they are never matched inside user text (a product whose
text says "<desc>" gets the characters, not the control token) and never appear in decoded text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from shopllm import storage
from shopllm.vocab import SPECIAL_TOKENS


class TextTokenizer:
    """Thin wrapper over `tokenizers.Tokenizer` with the project's special tokens."""

    def __init__(self, tokenizer: Tokenizer):
        self.tk = tokenizer
        self.tk.encode_special_tokens = True  # special tokens are inserted by id, never parsed from text
        for i, tok in enumerate(SPECIAL_TOKENS):
            if self.tk.token_to_id(tok) != i:
                raise ValueError(f"tokenizer special token {tok!r} is not id {i}; retrain the tokenizer")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2) -> TextTokenizer:
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tk.train_from_iterator(texts, trainer=trainer)
        return cls(tk)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TextTokenizer:
        """A tokenizer.json from a local path or a URI (read through the storage layer)."""
        return cls(Tokenizer.from_str(storage.read_text(os.fspath(path))))

    def save(self, path: str | os.PathLike) -> str:
        """Write tokenizer.json to a local path or a URI in one atomic write; returns where."""
        path = os.fspath(path)
        storage.write_text(path, self.tk.to_str(pretty=True))
        return path

    @property
    def n_text(self) -> int:
        """Size of the text part of the joint vocabulary (special tokens included)."""
        return self.tk.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts, encoded in parallel, each distinct text once (a shop's texts repeat: its
        descriptions cut at their slots give the same pieces of its voice many times)."""
        distinct = list(dict.fromkeys(texts))
        ids = [e.ids for e in self.encodings(distinct)]
        if len(distinct) == len(texts):
            return ids
        at = {text: i for i, text in enumerate(distinct)}
        return [ids[at[text]] for text in texts]

    def encodings(self, texts: Sequence[str]) -> list:
        """The `tokenizers` Encodings of many texts, encoded in parallel without the GIL. The `_fast` variant
        (tokenizers >= 0.20) skips the character offsets, which nothing here reads: ~20% less CPU, the same
        ids."""
        encode = getattr(self.tk, "encode_batch_fast", self.tk.encode_batch)
        return encode(list(texts), add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the ids; special tokens (and anything outside the text vocabulary) are dropped."""
        n = self.n_text
        s = len(SPECIAL_TOKENS)
        return self.tk.decode([i for i in ids if s <= i < n], skip_special_tokens=True)

    def tokens_per_char(self, texts: Iterable[str]) -> float:
        texts = [t for t in texts if t]
        chars = sum(len(t) for t in texts)
        tokens = sum(len(ids) for ids in self.encode_batch(texts))
        return tokens / chars if chars else 0.0
