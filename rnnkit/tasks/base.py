"""What every benchmark task of the RNN papers provides, and the model that runs them.

A task generates fresh batches from a ``torch.Generator`` (so training never runs out of
data and the test set is drawn from a stream training never sees), defines its loss,
and judges a test set by the success criterion of its paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..layers import registry


@dataclass
class Batch:
    """One batch of a task, time-major.

    x: (T, B, I) float inputs; target: task-specific tensor; lengths: (B,) int64 or None
    when every sequence has length T.
    """

    x: Tensor
    target: Tensor
    lengths: Tensor | None = None


@dataclass
class Evaluation:
    """The figures of one test-set evaluation and whether the paper's criterion is met."""

    metrics: dict[str, float]
    solved: bool
    #: one line such as ``test MSE 0.0042 (baseline 0.167): solved``
    verdict: str


@dataclass
class TaskDefaults:
    """The settings a task runs with unless told otherwise: rnnkit's defaults
    (``Task.defaults``, tuned to show the paper's result on a 2-core CPU in minutes) or the
    paper's own (``Task.paper_settings``, ``rnnkit task NAME --paper-settings``)."""

    seq_len: int | None = 100
    hidden_size: int = 64
    batch_size: int = 50
    lr: float = 1e-2
    #: "adam", "rmsprop" or "sgd" (see :class:`~rnnkit.tasks.LoopConfig`)
    optimizer: str = "adam"
    #: global gradient-norm clipping (None: none)
    clip_norm: float | None = 1.0
    #: element-wise gradient clipping (None: none)
    clip_value: float | None = None
    #: the step budget of a run that is given neither max_steps nor max_time
    max_steps: int = 3000
    eval_every: int = 100
    test_size: int = 1000
    #: per cell, a hidden size other than ``hidden_size`` (a paper that sized each model to a
    #: similar number of parameters)
    hidden_per_cell: dict[str, int] = field(default_factory=dict)
    #: per cell, options of its layer (``rnnkit.make_layer`` keywords), e.g. the LSTM's forget_bias
    layer_options: dict[str, dict] = field(default_factory=dict)
    #: where the values come from
    source: str = "rnnkit's defaults"

    def hidden_for(self, cell: str) -> int:
        return self.hidden_per_cell.get(cell, self.hidden_size)

    def options_for(self, cell: str) -> dict:
        return dict(self.layer_options.get(cell, {}))

    def describe(self) -> str:
        """One line: every value, as ``rnnkit task --list`` shows it."""
        per_cell = ", ".join(f"{c} {h}" for c, h in self.hidden_per_cell.items())
        parts = [f"T={self.seq_len}" if self.seq_len is not None else "no T",
                 f"hidden {self.hidden_size}" + (f" ({per_cell})" if per_cell else "")]
        parts += [f"batch {self.batch_size}", f"{self.optimizer} lr {self.lr:g}",
                  f"clip norm {self.clip_norm:g}" if self.clip_norm is not None else "no norm clipping"]
        if self.clip_value is not None:
            parts.append(f"clip values to ±{self.clip_value:g}")
        parts += [f"{self.max_steps} steps", f"eval every {self.eval_every}", f"test set {self.test_size}"]
        parts += [f"{c} with " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in o.items())
                  for c, o in self.layer_options.items()]
        return ", ".join(parts)


class Task:
    """Base class. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    paper: str = ""
    input_size: int = 0
    output_size: int = 0
    #: "last": the loss reads the output at each sequence's last step; "all": every step
    readout: str = "last"
    defaults = TaskDefaults()
    #: the paper's hyper-parameters as far as it states them (None: the paper gives none)
    paper_settings: TaskDefaults | None = None

    def __init__(self, seq_len: int | None = None):
        self.seq_len = seq_len

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def loss(self, y: Tensor, batch: Batch) -> Tensor:
        """y: (B, O) for readout "last", (T, B, O) for "all"."""
        raise NotImplementedError

    def evaluate(self, y: Tensor, batch: Batch) -> Evaluation:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} (T={self.seq_len})" if self.seq_len is not None else self.name

    @classmethod
    def settings(cls, paper: bool = False) -> TaskDefaults:
        """``defaults``, or with ``paper=True`` the paper's settings."""
        if not paper:
            return cls.defaults
        if cls.paper_settings is None:
            raise ValueError(f"the task {cls.name!r} has no paper settings")
        return cls.paper_settings


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")


def verdict(name: str, value: float, baseline: float, solved: bool, extra: str = "") -> str:
    tail = f", {extra}" if extra else ""
    return f"test {name} {value:.4g} (baseline {baseline:.4g}){tail}: {'solved' if solved else 'not solved'}"


class TaskModel(nn.Module):
    """A recurrent layer of any registered cell and a linear read-out.

        h_t = cell(x_t, h_{t-1})       y_t = W h_t + b

    ``forward`` returns y at each sequence's last step (B, O) for tasks judged at the end
    of the sequence, and every y_t (T, B, O) for tasks judged at every step.
    """

    def __init__(self, task: Task, cell: str = "lstm", hidden_size: int = 128, **layer_options):
        super().__init__()
        self.readout = task.readout
        self.rnn = registry.build(cell, task.input_size, hidden_size, **layer_options)
        out_size = self.rnn.output_size
        self.head = nn.Linear(out_size, task.output_size)

    def forward(self, batch: Batch) -> Tensor:
        h, _ = self.rnn(batch.x, lengths=batch.lengths) if batch.lengths is not None else self.rnn(batch.x)
        # (T, B, H)
        if self.readout == "all":
            return self.head(h)  # (T, B, O)
        if batch.lengths is None:
            last = h[-1]  # (B, H)
        else:
            idx = (batch.lengths - 1).to(h.device)
            last = h[idx, torch.arange(h.shape[1], device=h.device)]  # (B, H)
        return self.head(last)  # (B, O)
