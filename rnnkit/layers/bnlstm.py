"""``rnnkit.LSTM(..., batch_norm=True)``: the LSTM with recurrent batch normalization
(Cooijmans et al. 2017), a layer with running statistics per time step."""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from ..cells.bnlstm import STAT_NAMES, BatchNormLSTMCell, BatchNormRun, run_batch_norm_lstm
from .classic import LSTM
from .recurrent import Recurrent, _check_arguments

#: keyword arguments of rnnkit.LSTM that batch_norm=True does not combine with, and why
_UNSUPPORTED = {
    "proj_size": "the projection is not batch-normalized",
    "peephole": "the peepholes are not in the batch-normalized equations",
    "layer_norm": "choose one normalization",
    "activation": "the batch-normalized cell uses tanh",
    "recurrent_activation": "the batch-normalized cell uses sigmoid",
    "recurrent_dropout": "not implemented for the batch-normalized loop",
    "zoneout": "not implemented for the batch-normalized loop",
}
_DEFAULTS = {"proj_size": 0, "peephole": False, "layer_norm": False, "activation": "tanh",
             "recurrent_activation": "sigmoid", "recurrent_dropout": 0.0, "zoneout": 0.0}


class BatchNormLSTM(LSTM):
    """LSTM with recurrent batch normalization (Cooijmans et al. 2017), built by
    ``rnnkit.LSTM(input_size, hidden_size, ..., batch_norm=True)``:

        (i, f, g, o) = BN_t(W_hh h_{t-1}; γ_h) + BN_t(W_ih x_t; γ_x) + b_ih + b_hh
        c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g)
        h_t = σ(o) ⊙ tanh(BN_t(c_t; γ_c, β_c))

    (see :class:`~rnnkit.cells.BatchNormLSTMCell`). BN_t normalizes each feature over the
    batch with statistics of the time step t: in training the batch's own, and the running
    statistics of step t are updated as torch.nn.BatchNorm1d's (``batch_norm_momentum``,
    unbiased variance); in evaluation the running ones. Steps t >= ``batch_norm_max_steps``
    (the paper's T_max; set it to the training length) share the statistics of step
    T_max - 1. The statistics belong to the position t in the input, in both directions; a
    sequence fed in pieces (truncated BPTT, one step at a time) counts t from 0 in each piece.
    The running averages trail fast-moving weights: re-estimate them after training with a
    cumulative average (``batch_norm_momentum = None``; docs/new-units.md) before evaluating.
    With ``lengths`` (or a PackedSequence) the batch statistics of a step count only the
    sequences that reach it; a step that only one sequence reaches uses its running
    statistics. γ starts at ``batch_norm_gain`` = 0.1, the paper's recommendation, β_c at 0.

    Args, beyond rnnkit.LSTM's (inputs, outputs and shapes as torch.nn.LSTM):
        batch_norm_max_steps: T_max, the steps with statistics of their own (default 100).
        batch_norm_momentum: of the running statistics (0.1, as torch.nn.BatchNorm1d); None: a
            cumulative average over the batches each step has seen (``bn_num_batches_tracked_l{k}``).
        batch_norm_eps: ε added to the variance (1e-5).
        batch_norm_gain: the initial γ of the three normalizations (0.1).

    Parameters per layer and direction, beyond torch.nn.LSTM's: ``bn_ih_weight_l{k}`` (4H),
    ``bn_hh_weight_l{k}`` (4H), ``bn_c_weight_l{k}`` (H), ``bn_c_bias_l{k}`` (H); buffers
    ``bn_{ih,hh,c}_running_{mean,var}_l{k}`` (T_max, 4H or H) and ``bn_num_batches_tracked_l{k}``
    (T_max,) in the state_dict.

    Not combined with ``proj_size``, ``peephole``, ``layer_norm``, other activations,
    ``recurrent_dropout`` or ``zoneout`` (a ValueError names the conflict). Training needs a
    batch of two sequences or more (as torch.nn.BatchNorm1d). The native loops do not run it:
    it runs its own Python loop with a hand-written backward.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        batch_norm: bool = True,
        batch_norm_max_steps: int = 100,
        batch_norm_momentum: float | None = 0.1,
        batch_norm_eps: float = 1e-5,
        batch_norm_gain: float = 0.1,
        **options,
    ):
        if batch_norm is not True:
            raise ValueError(f"BatchNormLSTM is the batch_norm=True LSTM, got batch_norm={batch_norm!r}")
        given = {"proj_size": proj_size, **options}
        for name, why in _UNSUPPORTED.items():
            value = given.get(name, _DEFAULTS[name])
            if (any(value) if isinstance(value, (tuple, list)) else value != _DEFAULTS[name]):
                raise ValueError(f"batch_norm=True cannot be combined with {name}={value!r}: {why}")
            options.pop(name, None)
        if isinstance(batch_norm_max_steps, bool) or not isinstance(batch_norm_max_steps, int) \
                or batch_norm_max_steps < 1:
            raise ValueError(f"batch_norm_max_steps must be a positive integer, got {batch_norm_max_steps!r}")
        for name, value, ok in (("batch_norm_momentum", batch_norm_momentum, lambda m: 0.0 <= m <= 1.0),
                                ("batch_norm_eps", batch_norm_eps, lambda e: e > 0.0),
                                ("batch_norm_gain", batch_norm_gain, lambda g: True)):
            if value is None and name == "batch_norm_momentum":
                continue
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not ok(value):
                raise ValueError(f"{name} got an invalid value {value!r}")
        _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        self.batch_norm_max_steps = batch_norm_max_steps
        self.batch_norm_momentum = None if batch_norm_momentum is None else float(batch_norm_momentum)
        self.batch_norm_eps = float(batch_norm_eps)
        self.batch_norm_gain = float(batch_norm_gain)
        factory = {"device": device, "dtype": dtype}
        D = 2 if bidirectional else 1
        Recurrent.__init__(self, BatchNormLSTMCell(hidden_size, bias), input_size, num_layers, bias, batch_first,
                           dropout, bidirectional, device, dtype, **options)
        self.proj_size = 0
        for layer in range(num_layers):
            for d in range(D):
                for s, size in zip(STAT_NAMES, (4 * hidden_size, 4 * hidden_size, hidden_size)):
                    self.register_buffer(self._stat_name(s, "mean", layer, d),
                                         torch.zeros(batch_norm_max_steps, size, **factory))
                    self.register_buffer(self._stat_name(s, "var", layer, d),
                                         torch.ones(batch_norm_max_steps, size, **factory))
                self.register_buffer(self._count_name(layer, d),
                                     torch.zeros(batch_norm_max_steps, dtype=torch.long, device=device))

    batch_norm = True

    @staticmethod
    def _stat_name(s: str, which: str, layer: int, d: int) -> str:
        return f"bn_{s}_running_{which}_l{layer}" + ("_reverse" if d else "")

    @staticmethod
    def _count_name(layer: int, d: int) -> str:
        return f"bn_num_batches_tracked_l{layer}" + ("_reverse" if d else "")

    def _running(self, layer: int, d: int) -> dict[str, Tensor]:
        stats = {f"{s}_{w}": getattr(self, self._stat_name(s, w, layer, d))
                 for s in STAT_NAMES for w in ("mean", "var")}
        return {**stats, "count": getattr(self, self._count_name(layer, d))}

    def reset_running_stats(self) -> None:
        """Running means to 0, variances to 1 and counts to 0, as torch.nn.BatchNorm1d."""
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                for name, t in self._running(layer, d).items():
                    t.fill_(1.0 if name.endswith("var") else 0.0)

    def reset_parameters(self) -> None:
        """The LSTM weights by ``init``; γ = ``batch_norm_gain`` (Cooijmans et al. 2017, on initializing γ: 0.1
        keeps the gradient flowing through time), β_c = 0; the running statistics reset."""
        super().reset_parameters()
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    for name in ("bn_ih_weight", "bn_hh_weight", "bn_c_weight"):
                        getattr(self, names[name]).fill_(self.batch_norm_gain)
                    getattr(self, names["bn_c_bias"]).zero_()
        if hasattr(self, self._stat_name("ih", "mean", 0, 0)):
            self.reset_running_stats()

    def _forward_stack(self, x: Tensor, state0: list[Tensor], lengths: Tensor | None):
        T, B, _ = x.shape
        if self.training and B == 1:  # torch.nn.BatchNorm1d's error
            raise ValueError(f"Expected more than 1 value per channel when training, got input batch of {B} "
                             "(batch_norm=True normalizes over the batch: train on 2 or more sequences, or eval())")
        if torch.is_autocast_enabled(x.device.type):
            raise ValueError("batch_norm=True does not run under autocast; run the LSTM in one dtype")
        valid = None
        counts = [B] * T
        if lengths is not None:
            steps = torch.arange(T).unsqueeze(1)  # (T, 1)
            mask = steps < lengths.cpu().unsqueeze(0)  # (T, B)
            counts = mask.sum(1).tolist()
            valid = mask.unsqueeze(2).to(x.device)  # (T, B, 1)
        exporting = getattr(torch.compiler, "is_exporting", lambda: False)()
        reference = self.backend == "autograd" or exporting
        D = self.num_directions
        finals: list[list[Tensor]] = [[], []]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                run = BatchNormRun(reverse=bool(d), valid=valid, counts=counts, training=self.training,
                                   eps=self.batch_norm_eps, momentum=self.batch_norm_momentum,
                                   running=self._running(layer, d))
                key = f"l{layer}" + ("_reverse" if d else "")
                if self._observe is not None:
                    run.observe = lambda t, state, cache, key=key, fn=self._observe: fn(key, t, state, cache)
                if self._record is not None:
                    if reference:
                        raise ValueError("the gradient-norm record needs backend='bptt' with batch_norm=True")
                    record, name = self._record
                    run.record = lambda norms, key=f"{name}.{key}", rec=record: rec.norms.__setitem__(key, norms)
                out, st = run_batch_norm_lstm(self.cell, layer_in, (state0[0][k], state0[1][k]),
                                              self._params(layer, d), run, reference=reference)
                outs.append(out)
                for f, s in zip(finals, st):
                    f.append(s)
            layer_in = outs[0] if D == 1 else torch.cat(outs, 2)  # (T, B, D·H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
        return layer_in, [torch.stack(f) for f in finals]

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + f", batch_norm_max_steps={self.batch_norm_max_steps}"
