"""The generic recurrent layer: a stack of any cell on the BPTT engine, and the gradient record.

The classic layers (:mod:`rnnkit.layers.classic`) are thin subclasses that build their cell;
``rnnkit.LSTM(...)`` accepts what ``torch.nn.LSTM`` accepts (positional and keyword
arguments, ``h0``/``(h0, c0)``, ``PackedSequence``, unbatched input) and has the same
parameter names and shapes, so a ``torch.nn`` state_dict loads as it is. Beyond
torch.nn: ``lengths=`` without packing, learnable initial state, variational
recurrent dropout, zoneout, initialisation schemes, and the cell variants.
"""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import engine
from ..cells import Cell, LSTMCell

INIT_SCHEMES = ("pytorch", "orthogonal", "identity", "xavier")


@dataclass
class GradientRecord:
    """‖∂L/∂h_t‖ recorded during backward, per layer and direction.

    ``norms[name]`` is a (T, B) tensor, name like ``"lstm.l0"`` or ``"lstm.l1_reverse"``.
    """

    norms: dict[str, Tensor] = field(default_factory=dict)

    def per_step(self, name: str | None = None) -> Tensor:
        """Mean over the batch of the record of one layer (default: the first): (T,)."""
        key = name if name is not None else next(iter(self.norms))
        return self.norms[key].mean(1)


@contextmanager
def record_gradient_norms(module: nn.Module) -> Iterator[GradientRecord]:
    """Record ‖∂L/∂h_t‖ for every rnnkit layer inside ``module`` during backward passes
    run within the ``with`` block (the last backward wins)."""
    record = GradientRecord()
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, Recurrent)]
    for name, m in layers:
        m._record = (record, name or type(m).__name__.lower())
    try:
        yield record
    finally:
        for _, m in layers:
            m._record = None


def _check_arguments(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                     proj_size=0) -> None:
    """Accept and reject what torch.nn.RNN/LSTM/GRU accept and reject, with the same exception
    types, in the same order (``torch.nn.RNNBase.__init__``). Where torch.nn accepts at
    construction what its forward then rejects with a TypeError (``bidirectional`` or
    ``num_layers`` not a bool / an int), the TypeError comes at construction here."""
    if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout should be a number in range [0, 1] representing the probability of an element "
                         f"being zeroed, got {dropout!r}")
    for name, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be greater than zero, got {value}")
    for name, value in (("num_layers", num_layers), ("proj_size", proj_size)):
        if isinstance(value, bool) and (value or name == "num_layers"):  # torch.nn: proj_size=False is 0
            raise TypeError(f"{name} should be of type int, got: bool")
        try:
            operator.index(value)
        except TypeError:
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}") from None
    if num_layers <= 0:
        raise ValueError(f"num_layers must be greater than zero, got {num_layers}")
    if proj_size < 0:
        raise ValueError(f"proj_size should be a positive integer or zero to disable projections, got {proj_size}")
    if proj_size >= hidden_size:
        raise ValueError(f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} >= "
                         f"hidden_size={hidden_size}")
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional should be of type bool, got: {type(bidirectional).__name__}")


def _no_proj_size(options: dict) -> None:
    if "proj_size" in options:  # as torch.nn.RNN/GRU, even for proj_size=0
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")


def _as_rates(value: float | Sequence[float], n: int, what: str) -> tuple[float, ...]:
    rates = tuple(value) if isinstance(value, (tuple, list)) else (float(value),) * n
    if len(rates) != n:
        raise ValueError(f"{what} takes one rate or {n} rates (one per state entry), got {len(rates)}")
    for r in rates:
        if not 0.0 <= r < 1.0:
            raise ValueError(f"{what} rates must be in [0, 1), got {r}")
    return rates


def zoneout_mask(shape: tuple[int, ...], rate: float, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> Tensor:
    """A 0/1 mask of ``shape`` whose entries are 1 with probability ``rate``, independently:
    the units that keep their previous value under zoneout (Krueger et al. 2017). Drawn from
    torch's default generator.

    ``torch.bernoulli`` draws one random number per entry, serially on the CPU: 2.5 ms of CPU
    for a (100, 16, 128) mask, 18% of an LSTM's training step at T100·B16·H128 for its two
    masks (h and c). Here, on the CPU, the ones are placed by their gaps instead (0.8 ms for
    that mask): in a sequence of
    independent Bernoulli(p) draws the number of zeros before each one is geometric,
    P(G = k) = (1 − p)ᵏ p, drawn by inversion as G = ⌊log(1 − U) / log(1 − p)⌋ with U uniform
    in [0, 1) (float64). So about p·n random numbers make a mask of n entries (for p > 1/2 the
    zeros are placed the same way) — the same distribution as ``bernoulli``, a different
    stream of it. Other devices use ``bernoulli_`` (one fast kernel there)."""
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(rate)
    n = math.prod(shape)
    hit, p = (1.0, rate) if rate <= 0.5 else (0.0, 1.0 - rate)  # place the rarer value
    mask = torch.full((n,), 1.0 - hit, dtype=dtype, device=device)
    if p == 0.0:
        return mask.view(shape)
    log_keep = math.log1p(-p)
    start = 0  # the first entry not yet decided
    while start < n:
        m = _gaps_to_draw(n - start, p)
        u = torch.rand(m, dtype=torch.float64, device=device)
        # log(1 - U): 1 - U is exact for a float64 U in [0, 1), and log is cheaper than log1p
        steps = u.neg_().add_(1.0).log_().div_(log_keep).floor_().add_(1.0)  # G + 1: from one hit to the next
        pos = steps.cumsum_(0).add_(start - 1)  # (m,) the hits' positions, increasing (exact integers)
        k = int(torch.searchsorted(pos, float(n)))  # how many fall inside the mask
        mask.index_fill_(0, pos[:k].long(), hit)
        start = n if k < m else int(pos[-1]) + 1
    return mask.view(shape)


def zoneout_masks(shapes: Sequence[tuple[int, ...]], rate: float, dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> list[Tensor]:
    """One :func:`zoneout_mask` per shape in ``shapes``, all with ``rate``, drawn as one mask
    and split (each a contiguous view): the entries are independent whatever the split, and
    one draw of the gaps costs less than one per state entry (the LSTM's h and c masks)."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = zoneout_mask((sum(sizes),), rate, dtype, device)
    return [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]


def _gaps_to_draw(left: int, p: float) -> int:
    """How many gaps :func:`zoneout_mask` draws at once for the ``left`` entries still open:
    the expected number of hits plus 5 standard deviations, so that one draw covers the mask
    but about once in 10⁶ (then it draws again from the last hit on)."""
    return int(left * p + 5.0 * math.sqrt(left * p * (1.0 - p)) + 16)


class Recurrent(nn.Module):
    """A stack of recurrent layers of any :class:`~rnnkit.cells.Cell`.

    Args:
        cell: the cell (its math and hidden size), shared by every layer and direction.
        input_size: I, features of the input.
        num_layers, bias, batch_first, dropout, bidirectional, device, dtype: as torch.nn.LSTM.
        learn_initial_state: the initial state is a learned parameter (``initial_<s>``).
        recurrent_dropout: variational dropout rate on the recurrent input, one mask
            per sequence (Gal & Ghahramani 2016).
        zoneout: rate, or one rate per state entry (e.g. (h, c) for LSTM), with which a
            unit keeps its previous value (Krueger et al. 2017).
        init: ``"pytorch"`` (U(±1/√H)), ``"orthogonal"``, ``"identity"`` (IRNN) or ``"xavier"``.
        forget_bias: value of the LSTM forget-gate bias (Jozefowicz et al. 2015 use 1).
        backend: ``"bptt"`` (hand-written backward) or ``"autograd"`` (the reference path).

    Input (T, B, I) (or (B, T, I) with batch_first, or (T, I) unbatched, or a
    PackedSequence); output (T, B, D·R) with D = 2 if bidirectional and R the cell's
    output size; final state (L·D, B, S) per state entry.
    """

    def __init__(
        self,
        cell: Cell,
        input_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        learn_initial_state: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float | Sequence[float] = 0.0,
        init: str = "pytorch",
        forget_bias: float | None = None,
        backend: str = "bptt",
    ):
        super().__init__()
        _check_arguments(input_size, cell.hidden_size, num_layers, bias, batch_first, dropout, bidirectional)
        if dropout > 0 and num_layers == 1:  # torch.nn's warning
            warnings.warn(f"dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                          stacklevel=3)
        if not 0.0 <= recurrent_dropout < 1.0:
            raise ValueError(f"recurrent_dropout must be in [0, 1), got {recurrent_dropout}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"init must be one of {INIT_SCHEMES}, got {init!r}")
        if backend not in ("bptt", "autograd"):
            raise ValueError(f"backend must be 'bptt' or 'autograd', got {backend!r}")
        if cell.bias != bias:
            raise ValueError(f"cell.bias={cell.bias} disagrees with bias={bias}")
        self.cell = cell
        self.input_size = input_size
        self.hidden_size = cell.hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.recurrent_dropout = float(recurrent_dropout)
        self.zoneout = _as_rates(zoneout, len(cell.state_sizes()), "zoneout")
        self.init = init
        self.forget_bias = forget_bias
        self.backend = backend
        self._record: tuple[GradientRecord, str] | None = None
        #: called as fn(key, t, state, cache) after every step, key like "l0" / "l1_reverse"
        self._observe: Callable[[str, int, tuple, tuple], None] | None = None
        factory = {"device": device, "dtype": dtype}
        D = 2 if bidirectional else 1
        self._param_names: list[list[dict[str, str]]] = []  # [layer][direction] cell name → attribute
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else cell.output_size * D
            per_dir = []
            for d in range(D):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                names = {}
                for name, shape in cell.param_shapes(layer_in).items():
                    self.register_parameter(name + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names[name] = name + suffix
                per_dir.append(names)
            self._param_names.append(per_dir)
        if learn_initial_state:
            for sname, size in zip(cell.state_names, cell.state_sizes()):
                p = nn.Parameter(torch.zeros(num_layers * D, 1, size, **factory))
                self.register_parameter(f"initial_{sname}", p)
        self.learn_initial_state = learn_initial_state
        self.reset_parameters()

    # -- parameters -------------------------------------------------------------------------
    def _params(self, layer: int, direction: int) -> dict[str, Tensor]:
        return {n: getattr(self, a) for n, a in self._param_names[layer][direction].items()}

    @property
    def output_size(self) -> int:
        """Features per step of the output: D·R (D = 2 if bidirectional, R the cell's output
        size, e.g. proj_size for a projected LSTM)."""
        return self.cell.output_size * self.num_directions

    @property
    def state_sizes(self) -> tuple[int, ...]:
        """The size S_k of each state entry (each final state is (L·D, B, S_k)), e.g. (H,)
        for the GRU, (P, H) for the LSTM (P = proj_size or H)."""
        return tuple(self.cell.state_sizes())

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def flatten_parameters(self) -> None:
        """No-op, for drop-in compatibility with torch.nn.LSTM (there is no cuDNN weight buffer)."""

    # torch.nn.RNNBase's weight lists, read from the current attributes at every access, so
    # that they follow a weight replaced by another tensor (AWD-LSTM's weight drop) or by a
    # parametrization (torch.nn.utils.parametrize, parametrizations.weight_norm)
    @property
    def _all_weights(self) -> list[list[str]]:
        """Parameter names per layer and direction, in torch.nn's order (weight_ih, weight_hh,
        bias_ih, bias_hh, weight_hr, then this cell's own: peepholes, layer-norm gains...)."""
        return [list(names.values()) for per_dir in self._param_names for names in per_dir]

    @property
    def _flat_weights_names(self) -> list[str]:
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        return [getattr(self, name, None) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[Tensor]]:
        """The weights per layer and direction, as torch.nn.RNNBase.all_weights."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def reset_parameters(self) -> None:
        """Initialise every parameter by ``self.init`` (see the class docstring)."""
        H = self.hidden_size
        G = self.cell.gates
        bound = 1.0 / math.sqrt(H)
        with torch.no_grad():
            for per_dir in self._param_names:
                for names in per_dir:
                    for name, attr in names.items():
                        w = getattr(self, attr)
                        if name.startswith("ln_"):
                            w.fill_(0.0 if name.endswith("bias") else 1.0)
                        elif self.init == "pytorch":
                            w.uniform_(-bound, bound)
                        elif w.dim() == 1:
                            w.zero_()
                        elif self.init == "xavier" or name != "weight_hh":
                            if self.init == "identity" and name == "weight_ih":
                                w.normal_(0.0, 0.001)  # Le, Jaitly & Hinton 2015
                            else:
                                for block in w.chunk(G if w.shape[0] == G * H else 1):
                                    nn.init.xavier_uniform_(block)
                        else:  # weight_hh, one block per gate
                            for block in w.chunk(G if w.shape[0] == G * H else 1):
                                if self.init == "orthogonal":
                                    nn.init.orthogonal_(block)
                                else:
                                    nn.init.eye_(block)
                    if self.forget_bias is not None:
                        if not isinstance(self.cell, LSTMCell) or not self.bias:
                            raise ValueError("forget_bias needs an LSTM with bias=True")
                        getattr(self, names["bias_ih"])[H : 2 * H] = self.forget_bias
                        getattr(self, names["bias_hh"])[H : 2 * H] = 0.0

    # -- input checks -----------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a Tensor or PackedSequence, got {type(x).__name__}")
        if x.dim() != 3:
            raise ValueError(f"input must be 2-D (T, I) or 3-D (T, B, I), got {x.dim()}-D of shape {tuple(x.shape)}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"input has {x.shape[2]} features, expected input_size={self.input_size}")
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"input has an empty time or batch dimension: shape {tuple(x.shape)}")
        w = self.weight_ih_l0
        if x.dtype != w.dtype and not torch.is_autocast_enabled(x.device.type):  # torch.nn's ValueError
            raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype ({w.dtype}). Convert input: "
                             f"input.to({w.dtype}), or convert model: model.to({x.dtype})")
        if x.device != w.device:
            raise ValueError(f"input is on {x.device} but the parameters are on {w.device}")

    def _check_lengths(self, lengths: Tensor | Sequence[int], T: int, B: int) -> Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex():
            raise TypeError(f"lengths must be integers, got {lengths.dtype}")
        lengths = lengths.to(torch.int64)
        if int(lengths.min()) < 1 or int(lengths.max()) > T:
            raise ValueError(f"lengths must be in 1..{T}, got min {int(lengths.min())} max {int(lengths.max())}")
        return lengths

    def _initial_state(self, hx, B: int, x: Tensor) -> list[Tensor]:
        LD = self.num_layers * self.num_directions
        sizes = self.cell.state_sizes()
        names = self.cell.state_names
        if hx is None:
            if self.learn_initial_state:
                return [getattr(self, f"initial_{n}").expand(LD, B, s) for n, s in zip(names, sizes)]
            return [torch.zeros(LD, B, s, dtype=x.dtype, device=x.device) for s in sizes]
        states = [hx] if isinstance(hx, Tensor) else list(hx)
        if len(states) != len(sizes):
            raise ValueError(f"initial state must have {len(sizes)} tensor(s) {names}, got {len(states)}")
        for n, s, size in zip(names, states, sizes):
            if not isinstance(s, Tensor):
                raise TypeError(f"initial state {n} must be a Tensor, got {type(s).__name__}")
            if tuple(s.shape) != (LD, B, size):
                raise ValueError(f"initial state {n} must have shape {(LD, B, size)}, got {tuple(s.shape)}")
            if s.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):  # autocast: cast in engine
                raise TypeError(f"initial state {n} dtype {s.dtype} does not match input dtype {x.dtype}")
            if s.device != x.device:
                raise ValueError(f"initial state {n} is on {s.device} but the input is on {x.device}")
        return states

    # -- forward ----------------------------------------------------------------------------
    def forward(self, input, hx=None, lengths: Tensor | Sequence[int] | None = None):
        """Run the stack. Returns (output, h_n) or, for cells with two states such as the
        LSTM, (output, (h_n, c_n)); a PackedSequence input gives a PackedSequence output.

        Under ``torch.compile`` the layer runs eagerly: the graph breaks at its boundary. Under
        ``torch.export`` it is traced through the autograd reference (see docs/layers.md)."""
        if torch.compiler.is_compiling() and not engine.is_exporting():
            return _eager_forward(self, input, hx, lengths)
        return self._forward(input, hx, lengths)

    def _forward(self, input, hx, lengths):
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths= cannot be combined with a PackedSequence input")
            x, lengths = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
        else:
            x = input
        unbatched = isinstance(x, Tensor) and x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1)
            if hx is not None:
                hx = hx.unsqueeze(1) if isinstance(hx, Tensor) else tuple(h.unsqueeze(1) for h in hx)
        elif self.batch_first and not packed and isinstance(x, Tensor) and x.dim() == 3:
            x = x.transpose(0, 1)
        self._check_input(x)
        T, B, _ = x.shape
        if lengths is not None:
            lengths = self._check_lengths(lengths, T, B)
        out, states = self._forward_stack(x, self._initial_state(hx, B, x), lengths)

        if packed:
            idx = input.sorted_indices
            padded = out if idx is None else out.index_select(1, idx)
            lens = lengths if idx is None else lengths.index_select(0, idx.cpu())
            data = pack_padded_sequence(padded, lens.cpu(), enforce_sorted=True).data
            output = PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        elif unbatched:
            output = out.squeeze(1)
            states = [s.squeeze(1) for s in states]
        else:
            output = out.transpose(0, 1) if self.batch_first else out
        return output, (states[0] if len(states) == 1 else tuple(states))

    def _forward_stack(self, x: Tensor, state0: list[Tensor], lengths: Tensor | None):
        D = self.num_directions
        finals: list[list[Tensor]] = [[] for _ in state0]
        run = engine.run if self.backend == "bptt" else engine.run_reference
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                opts = self._loop_options(layer, d, layer_in, lengths)
                out, st = run(self.cell, layer_in, tuple(s[k] for s in state0), self._params(layer, d), opts)
                outs.append(out)
                for f, s in zip(finals, st):
                    f.append(s)
            layer_in = outs[0] if D == 1 else torch.cat(outs, 2)  # (T, B, D·R)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
        return layer_in, [torch.stack(f) for f in finals]

    def native_step(self, state, embedding: Tensor, head_weight: Tensor | None = None,
                    head_bias: Tensor | None = None):
        """A native one-step runner of embedding → this stack → linear head for generation
        (``rnnkit/cells/native/infer.h``, ``StackStep``), starting from ``state`` (what
        :meth:`forward` returned, batched: (L, B, S) per entry), or None where it cannot run
        (then run :meth:`forward` per step): bidirectional, zoneout, dropout in training mode,
        a diagnostics hook, the autograd backend, or a cell or device without a native step
        (:func:`rnnkit.engine.native.stack_step`).

        ``runner.step(ids)`` with ids (B,) int64 returns the logits (B, V) — a buffer that the
        next step overwrites — of ``head(stack(embedding[ids], state))`` and advances the
        state in place: the numbers of ``head(self(embedding[ids][None], state)[0][0])``."""
        if (self.bidirectional or any(self.zoneout) or self.backend != "bptt" or self._observe is not None
                or self._record is not None or (self.training and (self.dropout or self.recurrent_dropout))):
            return None
        states = [state] if isinstance(state, Tensor) else list(state)
        if len(states) != len(self.cell.state_sizes()) or any(s.dim() != 3 for s in states):
            return None
        params = [self._params(layer, 0) for layer in range(self.num_layers)]
        per_layer = [tuple(s[layer] for s in states) for layer in range(self.num_layers)]
        return engine.native.stack_step(self.cell, params, per_layer, embedding, head_weight, head_bias)

    def _loop_options(self, layer: int, d: int, x: Tensor, lengths: Tensor | None) -> engine.LoopOptions:
        T, B, _ = x.shape
        opts = engine.LoopOptions(reverse=bool(d), lengths=lengths)
        if self.recurrent_dropout and self.training:
            keep = 1.0 - self.recurrent_dropout
            R = self.cell.output_size
            opts.rmask = torch.bernoulli(torch.full((B, R), keep, dtype=x.dtype, device=x.device)) / keep
        if any(self.zoneout):
            masks: list[Tensor | None] = [None] * len(self.zoneout)
            sizes = self.cell.state_sizes()
            for rate in dict.fromkeys(r for r in self.zoneout if r):  # in the entries' order
                entries = [k for k, r in enumerate(self.zoneout) if r == rate]
                if self.training:  # the entries with one rate: one draw (zoneout_masks)
                    drawn = zoneout_masks([(T, B, sizes[k]) for k in entries], rate, x.dtype, x.device)
                else:
                    full = torch.full((1, 1, 1), rate, dtype=x.dtype, device=x.device)
                    drawn = [full.expand(T, B, sizes[k]) for k in entries]
                for k, mask in zip(entries, drawn):
                    masks[k] = mask
            opts.zoneout = masks
        if self._observe is not None:
            observe, key = self._observe, f"l{layer}" + ("_reverse" if d else "")
            opts.observe = lambda t, state, cache: observe(key, t, state, cache)
        if self._record is not None:
            record, name = self._record
            key = f"{name}.l{layer}" + ("_reverse" if d else "")
            opts.record = lambda norms: record.norms.__setitem__(key, norms)
        return opts

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.cell!r}, num_layers={self.num_layers}"
        for name, default in [("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False), ("recurrent_dropout", 0.0), ("init", "pytorch"),
                              ("learn_initial_state", False), ("backend", "bptt")]:
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        if any(self.zoneout):
            s += f", zoneout={self.zoneout}"
        return s


@torch._disable_dynamo
def _eager_forward(layer: Recurrent, input, hx, lengths):
    """``layer._forward`` outside dynamo's tracing: a graph break at the layer's boundary, so that
    the compiled graphs around it and the engine's own loop (Python or native, with its
    hand-written backward) each do what they are good at. ``torch._disable_dynamo`` imports
    dynamo on the first call only, so an uncompiled program never pays for it."""
    return layer._forward(input, hx, lengths)
