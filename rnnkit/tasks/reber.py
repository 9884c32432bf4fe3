"""The embedded Reber grammar (Reber 1967; as a benchmark: Cleeremans et al. 1989,
Hochreiter & Schmidhuber 1997, Experiment 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Batch, Evaluation, Task, TaskDefaults, _check_batch_size, verdict

SYMBOLS = "BTPSXVE"

#: the Reber automaton: state → [(symbol, next state)]; state 0 expects the initial B,
#: state 6 the final E, -1 is the end
_REBER = {
    0: [("B", 1)],
    1: [("T", 2), ("P", 3)],
    2: [("S", 2), ("X", 4)],
    3: [("T", 3), ("V", 5)],
    4: [("X", 3), ("S", 6)],
    5: [("P", 4), ("V", 6)],
    6: [("E", -1)],
}


def reber_string(generator: torch.Generator) -> str:
    """One string of the (plain) Reber grammar; each branch taken with probability 1/2."""
    state, out = 0, []
    while state != -1:
        choices = _REBER[state]
        k = int(torch.randint(0, len(choices), (1,), generator=generator)) if len(choices) > 1 else 0
        symbol, state = choices[k]
        out.append(symbol)
    return "".join(out)


def embedded_reber_string(generator: torch.Generator) -> str:
    """B, then T or P, a Reber string, the same T or P again, and E."""
    branch = "TP"[int(torch.randint(0, 2, (1,), generator=generator))]
    return "B" + branch + reber_string(generator) + branch + "E"


def _reber_successors(inner: str) -> list[set[str]] | None:
    """Legal next symbols after each prefix of a Reber string; None if it is not one."""
    state, sets = 0, []
    for symbol in inner:
        nxt = dict(_REBER.get(state, []))
        if symbol not in nxt:
            return None
        state = nxt[symbol]
        sets.append({s for s, _ in _REBER[state]} if state != -1 else set())
    return sets if state == -1 else None


def next_symbol_sets(string: str) -> list[set[str]]:
    """For an embedded Reber string s, the set of symbols the grammar allows after s[:i+1],
    for every i; raises ValueError if s is not in the embedded grammar."""
    if len(string) < 7 or string[0] != "B" or string[1] not in "TP" or string[-2] != string[1] \
            or string[-1] != "E":
        raise ValueError(f"not an embedded Reber string: {string!r}")
    inner = _reber_successors(string[2:-2])
    if inner is None:
        raise ValueError(f"not an embedded Reber string (inner part {string[2:-2]!r}): {string!r}")
    # after the inner E only the branch symbol chosen at step 2 may follow: the long-range dependency
    return [{"T", "P"}, {"B"}, *inner[:-1], {string[1]}, {"E"}, set()]


def accepts(string: str) -> bool:
    """Whether ``string`` belongs to the embedded Reber grammar."""
    try:
        next_symbol_sets(string)
    except ValueError:
        return False
    return True


class EmbeddedReber(Task):
    """Next-symbol prediction on the embedded Reber grammar (Hochreiter & Schmidhuber
    1997, §5.1, Experiment 1).

    Strings: B, then T or P, a string of the Reber grammar, the same T or P, E (symbols
    BTPSXVE, one-hot). At every step but the last, the network predicts the *set* of
    symbols that may come next: 7 sigmoid outputs, trained with binary cross-entropy
    against the multi-hot set. The hard prediction is the second-to-last: after the
    inner Reber string ends, only the T/P chosen at step 2 may follow — a dependency over
    the whole inner string.

    A prediction is right when the outputs above 0.5 are exactly the legal next symbols.
    Solved (the paper's criterion): every prediction of every string of a fresh test set
    is right. Baseline: a model that knows the grammar but not the branch symbol gets
    every prediction right except the second-to-last one in about half of the strings.
    """

    name = "reber"
    paper = "Hochreiter & Schmidhuber 1997, §5.1 (Experiment 1)"
    input_size = len(SYMBOLS)
    output_size = len(SYMBOLS)
    readout = "all"
    baseline = 0.5  # fraction of strings fully right without long-range memory
    defaults = TaskDefaults(seq_len=None, hidden_size=32, batch_size=32, lr=3e-3, max_steps=3000, test_size=256,
                            eval_every=50)
    # Experiment 1, Table 1's fastest LSTM: 3 memory-cell blocks of size 2 (6 cells), learning
    # rate 0.5, weights updated after every string; success after 8,440 strings. No forget gate
    # in the paper: ours starts wide open (bias 5)
    paper_settings = TaskDefaults(seq_len=None, hidden_size=6, batch_size=1, lr=0.5, optimizer="sgd", clip_norm=None,
                                  max_steps=20000, eval_every=500, test_size=256,
                                  layer_options={"lstm": {"forget_bias": 5.0}},
                                  source="Hochreiter & Schmidhuber 1997, §5.1")

    def __init__(self, seq_len: int | None = None):
        if seq_len is not None:
            raise ValueError("the embedded Reber grammar has no seq_len: string lengths come from the grammar")
        super().__init__(None)

    def encode(self, strings: list[str]) -> Batch:
        """One-hot inputs (T, B, 7) of each string without its last symbol, and the multi-hot
        targets (T, B, 7) of the legal next symbols, padded to the longest."""
        lengths = torch.tensor([len(s) - 1 for s in strings])
        T, B = int(lengths.max()), len(strings)
        x = torch.zeros(T, B, self.input_size)
        target = torch.zeros(T, B, self.output_size)
        for b, s in enumerate(strings):
            sets = next_symbol_sets(s)
            for t in range(len(s) - 1):
                x[t, b, SYMBOLS.index(s[t])] = 1.0
                for symbol in sets[t]:
                    target[t, b, SYMBOLS.index(symbol)] = 1.0
        return Batch(x, target, lengths)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        _check_batch_size(batch_size)
        return self.encode([embedded_reber_string(generator) for _ in range(batch_size)])

    def _valid(self, batch: Batch) -> Tensor:
        T = batch.x.shape[0]
        return (torch.arange(T).unsqueeze(1) < batch.lengths.unsqueeze(0)).to(batch.x.device)  # (T, B)

    def loss(self, y: Tensor, batch: Batch) -> Tensor:
        valid = self._valid(batch).unsqueeze(2).float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(y, batch.target, reduction="none")
        return (bce * valid).sum() / (valid.sum() * self.output_size)

    def evaluate(self, y: Tensor, batch: Batch) -> Evaluation:
        valid = self._valid(batch)  # (T, B)
        right = ((y > 0) == (batch.target > 0.5)).all(2) | ~valid  # (T, B): sigmoid(y) > 0.5 ⇔ y > 0
        strings_right = right.all(0)  # (B,)
        cols = torch.arange(y.shape[1])
        second_to_last = right[batch.lengths - 2, cols]  # the prediction of the final T/P
        n = y.shape[1]
        fraction = float(strings_right.float().mean())
        solved = bool(strings_right.all())
        metrics = {"strings_right": fraction, "second_to_last_right": float(second_to_last.float().mean()),
                   "predictions_right": float(right[valid].float().mean()), "baseline": self.baseline,
                   "loss": float(self.loss(y, batch))}
        return Evaluation(metrics, solved,
                          verdict("fraction of strings fully right", fraction, self.baseline, solved,
                                  f"second-to-last right {metrics['second_to_last_right']:.3f}, "
                                  f"{int((~strings_right).sum())}/{n} strings wrong"))
