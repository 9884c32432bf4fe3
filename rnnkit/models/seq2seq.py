"""Encoder–decoder with attention (Sutskever et al. 2014; Bahdanau et al. 2015; Luong et
al. 2015), teacher forcing with scheduled sampling (Bengio et al. 2015), greedy and beam
search decoding, and the sequence autoencoder (Dai & Le 2015) as a special case.

Encoder (any registered cell, optionally bidirectional, over embedded source tokens x_s):

    h̄_s = Enc(x_1..x_S)_s                      annotations (B, S, K)
    s_0 = tanh(W_b h̄_last + b_b)               per decoder state entry (bridge), h̄_last the
                                                final encoder state of the top layer (both directions)

Decoder, at output step t with previous token y_{t-1} (BOS at t = 1):

    Luong (score dot | general | concat), attention after the recurrence:
        s_t  = Dec(s_{t-1}, [E y_{t-1}; h̃_{t-1}])    (h̃_{t-1} only with input feeding; h̃_0 = 0)
        α_t  = softmax_s score(s_t, h̄_s),   c_t = Σ_s α_ts h̄_s
        h̃_t  = tanh(W_c [s_t; c_t])
    Bahdanau (score additive), attention before the recurrence, query the previous state:
        α_t  = softmax_s score(s_{t-1}, h̄_s),   c_t = Σ_s α_ts h̄_s
        s_t  = Dec(s_{t-1}, [E y_{t-1}; c_t])
        h̃_t  = tanh(W_c [s_t; c_t])
    none (Sutskever et al. 2014): s_t = Dec(s_{t-1}, E y_{t-1}),  h̃_t = s_t

    p(y_t | y_<t, x) = softmax(W_s h̃_t + b_s)

Padded source positions get α = 0 exactly (masked before the softmax). The decoder runs
one step at a time, except under pure teacher forcing with a Luong score and no input
feeding (or no attention), where the whole target goes through the decoder in one call.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .._config import option
from ..layers import registry
from .attention import SCORES, Attention

ATTENTION_KINDS = (*SCORES, "none")


def as_states(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """A layer's final state as a tuple of (L·D, B, S) tensors, whatever the family."""
    return (state,) if isinstance(state, Tensor) else tuple(state)


def from_states(states: tuple[Tensor, ...]) -> Tensor | tuple[Tensor, ...]:
    """The inverse of :func:`as_states`: one tensor for one-state families."""
    return states[0] if len(states) == 1 else states



@dataclass
class Seq2SeqConfig:
    """Architecture of a :class:`Seq2Seq` model (serialised as JSON next to the weights)."""

    src_vocab_size: int = 0
    tgt_vocab_size: int = 0
    #: any registered layer name (``rnnkit.layers.registry.names()``)
    cell: str = option("lstm", "recurrent cell of encoder and decoder")
    embedding_size: int = option(64, "symbol embedding size")
    #: decoder hidden size; also the width of the annotations (a bidirectional encoder
    #: has hidden_size / 2 units per direction)
    hidden_size: int = option(128, "decoder hidden units (a bidirectional encoder has half per direction)")
    num_layers: int = option(1, "stacked recurrent layers")
    bidirectional: bool = option(True, "bidirectional encoder")
    #: additive (Bahdanau) | dot | general | concat (Luong) | none
    attention: str = option("general", "attention score: additive (Bahdanau), dot, general, concat (Luong), none")
    #: feed h̃_{t-1} to the decoder input (Luong et al. 2015 §3.3); Luong scores only
    input_feeding: bool = option(True, "Luong scores: feed h̃_{t-1} back to the decoder input")
    dropout: float = option(0.0, "dropout between layers and on the decoder output")
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self):
        if self.src_vocab_size < 4 or self.tgt_vocab_size < 4:
            raise ValueError(f"vocabulary sizes must be at least 4 (pad, bos, eos, one symbol), got "
                             f"{self.src_vocab_size} and {self.tgt_vocab_size}")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"a bidirectional encoder needs an even hidden_size, got {self.hidden_size}")
        for name in ("embedding_size", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.cell not in registry.names():
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {registry.names()}")
        smallest = min(self.src_vocab_size, self.tgt_vocab_size)
        for name in ("pad_id", "bos_id", "eos_id"):
            if not 0 <= getattr(self, name) < smallest:
                raise ValueError(f"{name} must be in [0, {smallest}) (a symbol of both vocabularies), got "
                                 f"{getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SamplingSchedule:
    """Scheduled sampling (Bengio et al. 2015, §2.4): at training step i the decoder is fed
    the ground truth with probability ε_i and a token sampled from its own prediction
    with probability 1 - ε_i, where

        constant:         ε_i = k
        linear:           ε_i = max(ε_min, k - c·i)
        exponential:      ε_i = k^i                    (k < 1)
        inverse_sigmoid:  ε_i = k / (k + exp(i / k))   (k ≥ 1)

    ``kind="none"`` is plain teacher forcing (ε_i = 1).
    """

    kind: str = option("none", "scheduled sampling schedule of the teacher-forcing probability (Bengio et al. 2015)")
    k: float = option(1.0, "the schedule's k")
    c: float = option(1e-4, "the linear schedule's slope c")
    epsilon_min: float = option(0.0, "the linear schedule's floor ε_min")

    KINDS = ("none", "constant", "linear", "exponential", "inverse_sigmoid")

    def __post_init__(self):
        if self.kind not in self.KINDS:
            raise ValueError(f"sampling schedule must be one of {self.KINDS}, got {self.kind!r}")
        if self.kind == "exponential" and not 0 < self.k < 1:
            raise ValueError(f"an exponential schedule needs 0 < k < 1, got {self.k}")
        if self.kind == "inverse_sigmoid" and self.k < 1:
            raise ValueError(f"an inverse-sigmoid schedule needs k >= 1, got {self.k}")
        if self.kind in ("constant", "linear") and not 0 <= self.k <= 1:
            raise ValueError(f"a {self.kind} schedule needs 0 <= k <= 1, got {self.k}")

    def teacher_prob(self, step: int) -> float:
        """ε_i, the probability of feeding the ground-truth token at training step ``step``."""
        i = step
        if self.kind == "none":
            return 1.0
        if self.kind == "constant":
            return self.k
        if self.kind == "linear":
            return max(self.epsilon_min, self.k - self.c * i)
        if self.kind == "exponential":
            return self.k ** i
        return self.k / (self.k + math.exp(min(i / self.k, 700.0)))

    def sampling_prob(self, step: int) -> float:
        """1 - ε_i: the probability of feeding the model's own prediction."""
        return 1.0 - self.teacher_prob(step)


@dataclass
class Memory:
    """The encoded source: annotations, their attention-side projection and the mask."""

    keys: Tensor  # (B, S, K)
    prepared: Tensor  # (B, S, ·)
    mask: Tensor  # (B, S) True at real tokens
    summary: Tensor  # (B, K) final encoder state of the top layer

    def repeat(self, k: int) -> Memory:
        """Each sequence repeated k times in a row (for beam search): B → B·k."""
        return Memory(*(t.repeat_interleave(k, 0) for t in (self.keys, self.prepared, self.mask, self.summary)))


@dataclass
class Decoded:
    """Output of :meth:`Seq2Seq.greedy` / :meth:`Seq2Seq.beam_search`, batch-first.

    tokens: (B, T_out) produced token ids, EOS included where produced, ``pad_id`` after;
    lengths: (B,) number of produced tokens (EOS included); scores: (B,) log-probability
    of each output (beam search: before length normalisation); attention: (B, T_out, S)
    attention weights of each output step (zero rows after the end), None without attention.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Tensor | None


def sequence_loss(logits: Tensor, target: Tensor, pad_id: int) -> Tensor:
    """Mean cross-entropy per target token; logits (B, T, V), target (B, T), pads ignored."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                       ignore_index=pad_id)


class Seq2Seq(nn.Module):
    """Encoder–decoder with attention; see the module docstring for the equations.

    Inputs are batch-first token ids: ``src`` (B, S) padded with ``pad_id`` and
    ``src_lengths`` (B,); targets (B, T) as ``tgt_in = [BOS, y_1..y_n]`` and
    ``tgt_out = [y_1..y_n, EOS]``.
    """

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = c = config
        D = 2 if c.bidirectional else 1
        E, H, L = c.embedding_size, c.hidden_size, c.num_layers
        inter_dropout = c.dropout if L > 1 else 0.0
        self.src_embed = nn.Embedding(c.src_vocab_size, E, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, E, padding_idx=c.pad_id)
        self.encoder = registry.build(c.cell, E, H // D, num_layers=L, bidirectional=c.bidirectional,
                                   dropout=inter_dropout)
        K = self.encoder.output_size
        self.key_size = K
        self.bahdanau = c.attention == "additive"
        self.luong = c.attention in ("dot", "general", "concat")
        self.input_feeding = self.luong and c.input_feeding
        extra = K if self.bahdanau else (H if self.input_feeding else 0)
        self.decoder = registry.build(c.cell, E + extra, H, num_layers=L, dropout=inter_dropout)
        R, state_sizes = self.decoder.output_size, tuple(self.decoder.state_sizes)
        self.state_sizes = state_sizes
        self.bridge = nn.ModuleList(nn.Linear(K, L * S) for S in state_sizes)  # W_b per state entry
        if c.attention != "none":
            self.attention = Attention(c.attention, R, K)
            self.combine = nn.Linear(R + K, H, bias=False)  # W_c
            out_in = H
        else:
            out_in = R
        self.out = nn.Linear(out_in, c.tgt_vocab_size)  # W_s
        self.drop = nn.Dropout(c.dropout)

    # -- encoder -------------------------------------------------------------------------------
    def _lengths(self, src: Tensor, src_lengths: Tensor | None) -> Tensor:
        if src.dim() != 2:
            raise ValueError(f"src must be (B, S) token ids, got shape {tuple(src.shape)}")
        if src.dtype != torch.long:
            raise TypeError(f"src must hold int64 token ids, got {src.dtype}")
        if src_lengths is None:
            src_lengths = (src != self.config.pad_id).sum(1)
        src_lengths = torch.as_tensor(src_lengths, dtype=torch.long).cpu()
        if src_lengths.shape != (src.shape[0],):
            raise ValueError(f"src_lengths must have shape ({src.shape[0]},), got {tuple(src_lengths.shape)}")
        if int(src_lengths.min()) < 1 or int(src_lengths.max()) > src.shape[1]:
            raise ValueError(f"source lengths must be in 1..{src.shape[1]}, got min {int(src_lengths.min())} "
                             f"max {int(src_lengths.max())} (empty source sequence?)")
        return src_lengths

    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> tuple[Memory, tuple[Tensor, ...]]:
        """src (B, S) → the memory and the decoder's initial state (one (L, B, S_k) per entry)."""
        lengths = self._lengths(src, src_lengths)
        B, S = src.shape
        x = self.drop(self.src_embed(src)).transpose(0, 1)  # (S, B, E)
        out, final = self.encoder(x, lengths=lengths)  # (S, B, K)
        D = 2 if self.config.bidirectional else 1
        h_top = as_states(final)[0][-D:]  # (D, B, R_enc): the top layer, both directions
        summary = torch.cat(tuple(h_top), 1)  # (B, K)
        L = self.config.num_layers
        state = tuple(
            torch.tanh(lin(summary)).view(B, L, size).transpose(0, 1).contiguous()  # (L, B, S_k)
            for lin, size in zip(self.bridge, self.state_sizes)
        )
        keys = out.transpose(0, 1)  # (B, S, K)
        mask = torch.arange(S).unsqueeze(0) < lengths.unsqueeze(1)  # (B, S)
        prepared = self.attention.prepare_keys(keys) if self.config.attention != "none" else keys
        return Memory(keys, prepared, mask.to(src.device), summary), state

    def encode_vector(self, src: Tensor, src_lengths: Tensor | None = None) -> Tensor:
        """The fixed-size representation of each source sequence, (B, K): the final encoder
        state of the top layer (the sequence autoencoder's code, Dai & Le 2015)."""
        return self.encode(src, src_lengths)[0].summary

    # -- one decoder step ----------------------------------------------------------------------
    def _initial_feed(self, B: int, like: Tensor) -> Tensor | None:
        return like.new_zeros(B, self.config.hidden_size) if self.input_feeding else None

    def _step(self, y_prev: Tensor, state: tuple[Tensor, ...], feed: Tensor | None, mem: Memory):
        """y_prev (B,) → logits (B, V), new state, new input feed, attention (B, S) or None."""
        e = self.drop(self.tgt_embed(y_prev))  # (B, E)
        a = None
        if self.bahdanau:
            query = state[0][-1]  # (B, R): s_{t-1}, top layer
            c, a = self.attention(query.unsqueeze(1), mem.keys, mem.prepared, mem.mask)
            c, a = c.squeeze(1), a.squeeze(1)  # (B, K), (B, S)
            out, new = self.decoder(torch.cat((e, c), 1).unsqueeze(0), from_states(state))
            h = out[0]  # (B, R)
            h_att = torch.tanh(self.combine(torch.cat((h, c), 1)))  # (B, H)
        else:
            x = torch.cat((e, feed), 1) if self.input_feeding else e
            out, new = self.decoder(x.unsqueeze(0), from_states(state))
            h = out[0]  # (B, R)
            if self.luong:
                c, a = self.attention(h.unsqueeze(1), mem.keys, mem.prepared, mem.mask)
                c, a = c.squeeze(1), a.squeeze(1)
                h_att = torch.tanh(self.combine(torch.cat((h, c), 1)))  # (B, H)
            else:
                h_att = h
        logits = self.out(self.drop(h_att))  # (B, V)
        return logits, as_states(new), (h_att if self.input_feeding else None), a

    # -- training ------------------------------------------------------------------------------
    def forward(self, src: Tensor, tgt_in: Tensor, src_lengths: Tensor | None = None,
                sampling_prob: float = 0.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor | None]:
        """Teacher-forced decoding: src (B, S), tgt_in (B, T) = [BOS, y_1..] → logits (B, T, V)
        and attention (B, T, S) (None without attention).

        ``sampling_prob``: probability, per sequence and step t > 1, of feeding a token sampled
        from the model's own prediction at t - 1 instead of the ground truth (scheduled
        sampling; see :class:`SamplingSchedule`)."""
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in must be (B, T) with B = {src.shape[0]}, got {tuple(tgt_in.shape)}")
        if not 0.0 <= sampling_prob <= 1.0:
            raise ValueError(f"sampling_prob must be in [0, 1], got {sampling_prob}")
        mem, state = self.encode(src, src_lengths)
        B, T = tgt_in.shape
        if sampling_prob == 0.0 and not self.bahdanau and not self.input_feeding:
            return self._forward_parallel(tgt_in, state, mem)
        feed = self._initial_feed(B, mem.keys)
        logits_all, attn_all = [], []
        y = tgt_in[:, 0]
        for t in range(T):
            if t > 0:
                y = tgt_in[:, t]
                if sampling_prob > 0.0:
                    probs = logits_all[-1].detach().softmax(1)  # (B, V)
                    own = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                    use_own = torch.rand(B, generator=generator, device=probs.device) < sampling_prob
                    y = torch.where(use_own, own, y)
            logits, state, feed, a = self._step(y, state, feed, mem)
            logits_all.append(logits)
            attn_all.append(a)
        attention = torch.stack(attn_all, 1) if attn_all[0] is not None else None
        return torch.stack(logits_all, 1), attention  # (B, T, V), (B, T, S)

    def _forward_parallel(self, tgt_in: Tensor, state: tuple[Tensor, ...], mem: Memory):
        e = self.drop(self.tgt_embed(tgt_in)).transpose(0, 1)  # (T, B, E)
        out, _ = self.decoder(e, from_states(state))
        h = out.transpose(0, 1)  # (B, T, R)
        if not self.luong:
            return self.out(self.drop(h)), None
        c, a = self.attention(h, mem.keys, mem.prepared, mem.mask)  # (B, T, K), (B, T, S)
        h_att = torch.tanh(self.combine(torch.cat((h, c), 2)))  # (B, T, H)
        return self.out(self.drop(h_att)), a

    # -- decoding ------------------------------------------------------------------------------
    def _max_len(self, src: Tensor, max_len: int | None) -> int:
        if max_len is None:
            return 2 * src.shape[1] + 10
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        return max_len

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor | None = None, max_len: int | None = None) -> Decoded:
        """Greedy decoding, the whole batch at once: y_t = argmax p(y | y_<t, x), until EOS
        or ``max_len`` tokens (default 2·S + 10)."""
        c = self.config
        max_len = self._max_len(src, max_len)
        mem, state = self.encode(src, src_lengths)
        B = src.shape[0]
        feed = self._initial_feed(B, mem.keys)
        y = torch.full((B,), c.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        lengths = torch.zeros(B, dtype=torch.long)
        scores = torch.zeros(B, device=src.device)
        tokens, attn = [], []
        for _ in range(max_len):
            logits, state, feed, a = self._step(y, state, feed, mem)
            logp = logits.log_softmax(1)  # (B, V)
            y = logp.argmax(1)
            scores += torch.where(done, 0.0, logp.gather(1, y.unsqueeze(1)).squeeze(1))
            y = torch.where(done, c.pad_id, y)
            lengths += (~done).long().cpu()
            tokens.append(y)
            if a is not None:
                attn.append(a * (~done).unsqueeze(1))
            done = done | (y == c.eos_id)
            if bool(done.all()):
                break
        attention = torch.stack(attn, 1) if attn else None
        return Decoded(torch.stack(tokens, 1), lengths, scores, attention)

    @torch.no_grad()
    def beam_search(self, src: Tensor, src_lengths: Tensor | None = None, beam_size: int = 5,
                    max_len: int | None = None, length_penalty: float = 0.6) -> Decoded:
        """Beam search, batched over sequences (beam_size hypotheses per sequence).

        Each step extends every live hypothesis by every token and keeps the best
        ``beam_size`` non-EOS extensions per sequence; an extension by EOS that ranks among
        the best ``beam_size`` candidates is a finished hypothesis. A sequence is done when
        it has ``beam_size`` finished hypotheses (or at ``max_len``, when the live ones
        count as finished). The result is the finished hypothesis with the best
        length-normalised score (Wu et al. 2016)

            log p(Y | X) / lp(Y),   lp(Y) = ((5 + |Y|) / 6)^α,   α = length_penalty,

        with |Y| counting EOS; α = 0 ranks by raw log-probability. beam_size = 1 is greedy
        decoding.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if length_penalty < 0:
            raise ValueError(f"length_penalty must be >= 0, got {length_penalty}")
        c = self.config
        K = beam_size
        max_len = self._max_len(src, max_len)
        mem, state = self.encode(src, src_lengths)
        B, S = src.shape
        mem = mem.repeat(K)
        state = tuple(s.repeat_interleave(K, 1) for s in state)  # (L, B·K, S_k)
        feed = self._initial_feed(B * K, mem.keys)
        y = torch.full((B * K,), c.bos_id, dtype=torch.long, device=src.device)
        scores = torch.full((B, K), float("-inf"), device=src.device)
        scores[:, 0] = 0.0
        history = torch.zeros(B * K, 0, dtype=torch.long, device=src.device)  # tokens so far
        attn_history = torch.zeros(B * K, 0, S, device=src.device)
        finished: list[list[tuple[float, float, Tensor, Tensor | None]]] = [[] for _ in range(B)]
        done = [False] * B

        def lp(n: int) -> float:
            return ((5.0 + n) / 6.0) ** length_penalty

        for t in range(max_len):
            logits, state, feed, a = self._step(y, state, feed, mem)
            V = logits.shape[1]
            cand = scores.view(B * K, 1) + logits.log_softmax(1)  # (B·K, V)
            top_scores, top_ids = cand.view(B, K * V).topk(min(2 * K, K * V), 1)  # (B, 2K)
            top_scores, top_ids = top_scores.tolist(), top_ids.tolist()
            keep_rows, keep_tokens, keep_scores = [], [], []
            for b in range(B):
                chosen = []
                if not done[b]:
                    for rank, (s, i) in enumerate(zip(top_scores[b], top_ids[b])):
                        if s == float("-inf"):
                            break
                        row, tok = b * K + i // V, i % V
                        if tok == c.eos_id:
                            if rank < K:
                                hyp = torch.cat((history[row], history.new_tensor([tok])))
                                att = torch.cat((attn_history[row], a[row : row + 1])) if a is not None else None
                                finished[b].append((s / lp(t + 1), s, hyp, att))
                        else:
                            chosen.append((row, tok, s))
                        if len(chosen) == K:
                            break
                    if len(finished[b]) >= K:
                        done[b] = True
                while len(chosen) < K:  # a done sequence (or too few candidates): dead rows
                    chosen.append((b * K, c.pad_id, float("-inf")))
                for row, tok, s in chosen:
                    keep_rows.append(row)
                    keep_tokens.append(tok)
                    keep_scores.append(s)
            if all(done):
                break
            rows = torch.tensor(keep_rows, device=src.device)
            y = torch.tensor(keep_tokens, device=src.device)
            scores = torch.tensor(keep_scores, device=src.device).view(B, K)
            state = tuple(s.index_select(1, rows) for s in state)
            feed = feed.index_select(0, rows) if feed is not None else None
            history = torch.cat((history.index_select(0, rows), y.unsqueeze(1)), 1)
            if a is not None:
                attn_history = torch.cat((attn_history.index_select(0, rows), a.index_select(0, rows).unsqueeze(1)), 1)
        for b in range(B):
            if not done[b]:  # out of steps: the live hypotheses count as they are
                for k in range(K):
                    s = float(scores[b, k])
                    if s > float("-inf"):
                        row = b * K + k
                        att = attn_history[row] if a is not None else None
                        finished[b].append((s / lp(history.shape[1]), s, history[row], att))
        best = [max(f, key=lambda h: h[0]) for f in finished]
        T_out = max(len(h[2]) for h in best)
        tokens = torch.full((B, T_out), c.pad_id, dtype=torch.long, device=src.device)
        attention = torch.zeros(B, T_out, S, device=src.device) if c.attention != "none" else None
        for b, (_, _, hyp, att) in enumerate(best):
            tokens[b, : len(hyp)] = hyp
            if attention is not None:
                attention[b, : len(hyp)] = att
        lengths = torch.tensor([len(h[2]) for h in best])
        return Decoded(tokens, lengths, torch.tensor([h[1] for h in best]), attention)


def sequence_autoencoder(vocab_size: int, **config) -> Seq2Seq:
    """A sequence autoencoder (Dai & Le 2015): a :class:`Seq2Seq` whose target is its own
    input, by default without attention so that everything passes through the fixed-size
    code :meth:`Seq2Seq.encode_vector`. Train it with ``tgt = src``."""
    config.setdefault("attention", "none")
    return Seq2Seq(Seq2SeqConfig(src_vocab_size=vocab_size, tgt_vocab_size=vocab_size, **config))
