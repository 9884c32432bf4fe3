"""Attention over the encoder's annotations: additive and multiplicative scores.

Given a query q (the decoder state) and annotations h̄_s (the encoder outputs, s = 1..S),

    e_s = score(q, h̄_s)
    α_s = exp(e_s) / Σ_{s' valid} exp(e_s')     (padded positions get α_s = 0 exactly)
    c   = Σ_s α_s h̄_s

with the scores

    dot      (Luong et al. 2015)     score = qᵀ h̄_s                      (needs Q = K)
    general  (Luong et al. 2015)     score = qᵀ W_a h̄_s
    concat   (Luong et al. 2015)     score = v_aᵀ tanh(W_a [q; h̄_s])
    additive (Bahdanau et al. 2015)  score = vᵀ tanh(W q + U h̄_s)

``concat`` and ``additive`` are the same function (split W_a = [W U]); the models differ
in *which* state is the query and where the context goes (see :class:`~rnnkit.models.Seq2Seq`).
The key-side products (W_a h̄ or U h̄) are computed once per source sequence.
"""

from __future__ import annotations

from torch import Tensor, nn

SCORES = ("additive", "dot", "general", "concat")


class Attention(nn.Module):
    """Scores, masked softmax and context vector.

    Args:
        score: one of :data:`SCORES`.
        query_size: Q, features of the query.
        key_size: K, features of an annotation.
        attention_size: width of the hidden layer of the additive/concat score.
    """

    def __init__(self, score: str, query_size: int, key_size: int, attention_size: int | None = None):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"attention score must be one of {SCORES}, got {score!r}")
        if score == "dot" and query_size != key_size:
            raise ValueError(f"dot attention needs query size = key size, got {query_size} and {key_size}")
        self.score = score
        A = attention_size or query_size
        if score == "general":
            self.key_proj = nn.Linear(key_size, query_size, bias=False)  # W_a
        elif score in ("additive", "concat"):
            self.query_proj = nn.Linear(query_size, A, bias=False)  # W
            self.key_proj = nn.Linear(key_size, A, bias=True)  # U (and the bias of W_a)
            self.v = nn.Linear(A, 1, bias=False)

    def prepare_keys(self, keys: Tensor) -> Tensor:
        """The key-side product, computed once per source: keys (B, S, K) → (B, S, ·)."""
        return keys if self.score == "dot" else self.key_proj(keys)

    def forward(self, query: Tensor, keys: Tensor, prepared: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """query (B, Tq, Q), keys (B, S, K), prepared = prepare_keys(keys), mask (B, S)
        True at real (not padded) positions → context (B, Tq, K), weights (B, Tq, S)."""
        if self.score in ("dot", "general"):
            scores = query @ prepared.transpose(1, 2)  # (B, Tq, S)
        else:
            hidden = (self.query_proj(query).unsqueeze(2) + prepared.unsqueeze(1)).tanh()  # (B, Tq, S, A)
            scores = self.v(hidden).squeeze(3)  # (B, Tq, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(2)  # (B, Tq, S)
        return weights @ keys, weights  # (B, Tq, K), (B, Tq, S)
