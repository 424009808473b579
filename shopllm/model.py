"""The one model: a decoder-only transformer over the joint vocabulary (nanoGPT style, one file).

Vocabulary layout: ids [0, n_text) are special + BPE text tokens, ids [n_text, n_text + n_items) are
item tokens. A target that is an item is scored over item tokens only; a text target over text tokens
only. Input and output embeddings are tied. Sequences may be left-padded: positions are counted from
the first real token, so a padded prompt gives the same result as the unpadded one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from shopllm.losses import next_token_loss


@dataclass(frozen=True)
class GPTConfig:
    n_text: int = 8000  # special + BPE text tokens (ids 0..n_text-1)
    n_items: int = 2000  # item tokens (ids n_text..n_text+n_items-1)
    block_size: int = 192  # longest sequence, in tokens
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # width of the residual stream
    dropout: float = 0.1  # dropout on embeddings, attention and MLP outputs (training only)
    bias: bool = False  # biases in Linear and LayerNorm layers
    tie_items: bool = True  # item tokens score with their input embeddings; False: a separate output table

    @property
    def vocab_size(self) -> int:
        return self.n_text + self.n_items

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, model_cfg, n_text: int, n_items: int) -> GPTConfig:
        """The shape a `shopllm.config.ModelConfig` asks for, over a vocabulary of n_text + n_items tokens."""
        return cls(n_text=n_text, n_items=n_items, **asdict(model_cfg))


class KVCache:
    """Per-layer keys and values of the tokens seen so far, each (B, n_head, T_past, head_size)."""

    def __init__(self, n_layer: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].size(2)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep only batch rows `index` (drop finished sequences)."""
        self.layers = [None if kv is None else (kv[0][index], kv[1][index]) for kv in self.layers]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout

    def forward(self, x, attn_mask=None, cache: KVCache | None = None, layer: int = 0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            past = cache.layers[layer]
            if past is not None:
                k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, hs)
                v = torch.cat([past[1], v], dim=2)
            cache.layers[layer] = (k, v)
        dropout = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), attn_mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # untied: the item rows of wte only read a history, these rows score the next item
        self.item_out = None if config.tie_items else nn.Embedding(config.n_items, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled init of residual projections
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if non_embedding else n

    # ---- forward ------------------------------------------------------------------------------
    def hidden(self, idx, attention_mask=None, cache: KVCache | None = None):
        """Final hidden states (B, T, C). attention_mask: (B, T_past + T) bool, True = real token."""
        B, T = idx.size()
        past = cache.length if cache is not None else 0
        if attention_mask is None:
            pos = torch.arange(past, past + T, device=idx.device).unsqueeze(0)  # (1, T)
            attn_mask = None
            if past:  # new queries see every cached key plus the causal part of their own
                attn_mask = self._causal(past, T, idx.device).unsqueeze(0).unsqueeze(0)
        else:
            real = attention_mask.bool()  # (B, L)
            pos = (real.long().cumsum(1) - 1).clamp(min=0)[:, past:]  # (B, T)
            causal = self._causal(past, T, idx.device)  # (T, L)
            attn_mask = causal.unsqueeze(0) & real.unsqueeze(1)  # (B, T, L)
            # a padding query with nothing real to look at attends to itself (no NaN rows)
            diag = torch.zeros_like(causal)
            diag[torch.arange(T), torch.arange(past, past + T)] = True
            attn_mask = (attn_mask | diag.unsqueeze(0)).unsqueeze(1)  # (B, 1, T, L)
        if int(pos.max()) >= self.config.block_size:
            raise ValueError(f"sequence of {int(pos.max()) + 1} tokens exceeds block_size {self.config.block_size}")
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, attn_mask, cache, i)
        return self.ln_f(x)  # (B, T, C)

    @staticmethod
    def _causal(past: int, T: int, device) -> torch.Tensor:
        q = torch.arange(past, past + T, device=device).unsqueeze(1)  # (T, 1)
        k = torch.arange(past + T, device=device).unsqueeze(0)  # (1, L)
        return k <= q  # (T, L)

    def text_logits(self, h):
        return F.linear(h, self.wte.weight[: self.config.n_text])  # (..., n_text)

    def item_logits(self, h):
        return F.linear(h, self.item_weight())  # (..., n_items)

    def item_weight(self) -> torch.Tensor:
        """(n_items, C): the rows that score item tokens."""
        return self.wte.weight[self.config.n_text :] if self.item_out is None else self.item_out.weight

    def forward(
        self,
        idx,
        targets=None,
        attention_mask=None,
        cache: KVCache | None = None,
        *,
        label_smoothing: float = 0.0,
        future_items: int = 1,
        future_weight: float = 0.5,
        mask_seen_items: bool = False,
        sampled_negatives: int = 0,
    ):
        """idx (B, T) token ids; targets (B, T) next-token ids with -1 = ignore.

        Returns (logits, loss). Without targets: the logits (B, 1, V) of the last position and loss None.
        With targets (what the trainer and DDP call): logits None and the mean cross-entropy of
        `shopllm.losses.next_token_loss` (item targets over item tokens, text targets over text tokens),
        so the (B, T, V) logits are never built; the keyword settings are that function's.
        sampled_negatives > 0: item targets by sampled softmax (the job turns it on above a catalog size).
        """
        h = self.hidden(idx, attention_mask, cache)  # (B, T, C)
        if targets is None:
            out = torch.cat([self.wte.weight[: self.config.n_text], self.item_weight()])  # (V, C)
            return F.linear(h[:, -1:, :], out), None  # (B, 1, V)
        seen_idx = idx if mask_seen_items else None
        loss = next_token_loss(
            self, h, targets, label_smoothing, future_items, future_weight, seen_idx, sampled_negatives
        )
        return None, loss

    # ---- serving ------------------------------------------------------------------------------
    @torch.no_grad()
    def next_item_logprobs(self, idx, attention_mask=None):
        """Log-probabilities of the next token over item tokens only: (B, n_items). Inputs left-padded."""
        h = self.hidden(idx, attention_mask)[:, -1, :]  # (B, C)
        return F.log_softmax(self.item_logits(h).float(), dim=-1)  # (B, n_items)

    @torch.no_grad()
    def generate(
        self,
        idx,
        max_new_tokens: int,
        *,
        attention_mask=None,
        eos_id: int | None = None,
        banned_ids=None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        no_repeat_ngram: int = 0,
        logits_processor=None,
    ):
        """Continue left-padded prompts idx (B, T) with text tokens only; returns new tokens (B, N).

        Greedy when temperature == 0, else temperature + nucleus (top_p) sampling with `generator`.
        A row stops after `eos_id`; later positions of a finished row hold `eos_id`. `banned_ids`
        (text token ids) are never produced. With `no_repeat_ngram` = n > 0 no n-gram of new tokens
        is produced twice in a row's output (small models otherwise loop). Without the cache every step
        re-reads the whole sequence.
        `logits_processor(logits, previous)`, when given, may set logits (B, n_text) to -inf in place before each
        pick; `previous` is the (B,) tokens picked at the step before (None at the first step). It is how
        constrained decoding (shopllm.slots.SlotConstraint) keeps its per-row state.
        """
        B = idx.size(0)
        device = idx.device
        if attention_mask is None:
            attention_mask = torch.ones_like(idx, dtype=torch.bool)
        attention_mask = attention_mask.bool()
        max_new_tokens = min(max_new_tokens, self.config.block_size - idx.size(1))
        ban = torch.zeros(self.config.n_text, dtype=torch.bool, device=device)
        if banned_ids is not None:
            ban[torch.as_tensor(list(banned_ids), dtype=torch.long, device=device)] = True
        cache = KVCache(self.config.n_layer) if use_cache else None
        # greedy rows are independent: a finished row leaves the batch (sampling keeps the batch's shape, so a
        # generator's draws stay where they were)
        compact = (
            eos_id is not None and temperature <= 0 and (logits_processor is None or hasattr(logits_processor, "keep"))
        )
        seq, mask = idx, attention_mask
        step_input = idx
        out = []  # (B,) per step: every row's token, eos_id once a row is done
        live = torch.arange(B, device=device)  # the rows still in the batch
        done = torch.zeros(B, dtype=torch.bool, device=device)  # of the rows in the batch
        previous = None
        for _ in range(max(0, max_new_tokens)):
            if use_cache:
                h = self.hidden(step_input, mask, cache)[:, -1, :]  # (b, C)
            else:
                h = self.hidden(seq, mask)[:, -1, :]
            logits = self.text_logits(h).float().masked_fill(ban, float("-inf"))  # (b, n_text)
            if no_repeat_ngram > 0 and out:
                self._ban_repeats(logits, torch.stack(out, dim=1)[live].tolist(), no_repeat_ngram, eos_id)
            if logits_processor is not None:
                logits_processor(logits, previous)
            nxt = self._pick(logits, temperature, top_p, generator)  # (b,)
            if eos_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
                done = done | (nxt == eos_id)
            step = torch.full((B,), eos_id if eos_id is not None else 0, dtype=nxt.dtype, device=device)
            step[live] = nxt
            out.append(step)
            if eos_id is not None and bool(done.all()):
                break
            if compact and bool(done.any()):
                keep = (~done).nonzero().squeeze(1)
                live, nxt, done, seq, mask = live[keep], nxt[keep], done[keep], seq[keep], mask[keep]
                if cache is not None:
                    cache.reorder(keep)
                if logits_processor is not None:
                    logits_processor.keep(keep.cpu())
            previous = nxt
            step_input = nxt.unsqueeze(1)  # (b, 1)
            seq = torch.cat([seq, step_input], dim=1)
            mask = torch.cat([mask, torch.ones(len(live), 1, dtype=torch.bool, device=device)], dim=1)
        return torch.stack(out, dim=1) if out else idx.new_zeros((B, 0))

    @staticmethod
    def _ban_repeats(logits, generated: list[list[int]], n: int, eos_id: int | None) -> None:
        """Set to -inf (in place) every token that would complete an n-gram the row already produced."""
        for row, toks in enumerate(generated):
            if len(toks) < n - 1:
                continue
            prefix = tuple(toks[len(toks) - (n - 1) :]) if n > 1 else ()
            for i in range(len(toks) - n + 1):
                if tuple(toks[i : i + n - 1]) == prefix and toks[i + n - 1] != eos_id:
                    logits[row, toks[i + n - 1]] = float("-inf")

    @staticmethod
    def _pick(logits, temperature, top_p, generator):
        if temperature <= 0:
            return logits.argmax(dim=-1)
        probs = F.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < top_p  # always keeps the most likely token
            sorted_p = sorted_p * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    # ---- warm start ---------------------------------------------------------------------------
    def with_items(self, n_items: int) -> GPT:
        """A copy with `n_items` item rows: trained rows kept as they are, new rows at the mean item row."""
        old = self.config
        if n_items < old.n_items:
            raise ValueError("item vocabulary only grows; cannot drop item rows")
        from dataclasses import replace

        model = GPT(replace(old, n_items=n_items))
        state = self.state_dict()
        w = state["wte.weight"]
        new_w = model.wte.weight.detach().clone()
        new_w[: w.size(0)] = w
        if n_items > old.n_items and old.n_items > 0:
            new_w[w.size(0) :] = w[old.n_text :].mean(0, keepdim=True) + 0.02 * torch.randn_like(new_w[w.size(0) :])
        state["wte.weight"] = new_w
        if self.item_out is not None:
            out_w = state["item_out.weight"]
            grown_out = model.item_out.weight.detach().clone()
            grown_out[: old.n_items] = out_w
            if n_items > old.n_items and old.n_items > 0:
                grown_out[old.n_items :] = out_w.mean(0, keepdim=True) + 0.02 * torch.randn_like(
                    grown_out[old.n_items :]
                )
            state["item_out.weight"] = grown_out
        model.load_state_dict(state)
        return model

    def with_vocab(self, n_text: int, n_items: int) -> GPT:
        """A copy with `n_text` text rows (tokens appended to the tokenizer: slot tokens) and `n_items` item
        rows. Every trained row keeps its weights; new text rows start at the mean text row, new item rows at
        the mean item row (see with_items). Item token ids move up by the new text rows, item indices do not."""
        old = self.config
        if n_text < old.n_text:
            raise ValueError("the text vocabulary only grows; cannot drop text rows")
        model = self.with_items(n_items)
        if n_text == old.n_text:
            return model
        from dataclasses import replace

        grown = GPT(replace(model.config, n_text=n_text))
        state = model.state_dict()
        w = state["wte.weight"]  # (old n_text + n_items, C)
        text, items = w[: old.n_text], w[old.n_text :]
        new_text = text.mean(0, keepdim=True) + 0.02 * torch.randn(n_text - old.n_text, w.size(1))
        state["wte.weight"] = torch.cat([text, new_text.to(w.dtype), items])
        grown.load_state_dict(state)
        return grown

    def flops_per_token(self, item_share: float) -> float:
        """Training FLOPs per target token, as in nanoGPT's and PaLM's MFU estimates: 6 per weight that
        multiplies the token (forward 2, backward 4) plus 12·layers·width·block_size for attention. The
        tied embedding is not a matmul on the way in, and on the way out a position is scored over one part
        of it only: item targets over the item rows, text targets over the text rows (`item_share` of the
        targets are items). Counting all of it as 6N would read ~20% high at the GPU preset's shape."""
        c = self.config
        blocks = (
            self.num_params() - self.wte.weight.numel() - (0 if self.item_out is None else self.item_out.weight.numel())
        )
        head = c.n_embd * (item_share * c.n_items + (1.0 - item_share) * c.n_text)
        return 6 * (blocks + head) + 12 * c.n_layer * c.n_embd * c.block_size
