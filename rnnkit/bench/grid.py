"""``rnnkit bench``: speed of every cell and variant against torch.nn, a plain Python
loop and the machine's own GEMM throughput, measured in one run.

For every shape of the grid and every cell/variant it measures, interleaving the
implementations round by round so that a change in machine load hits all of them alike:

- the time of one training step (forward, ``out.sum()``, backward to the weights and to
  the input, as for any layer above the first) and of inference
  (eval mode, forward under ``torch.no_grad``): every round is kept; the table gives the
  median with the fastest and slowest round, each ratio the median of the per-round
  ratios with its worst round, and the targets are judged by the worst round;
- the same for ``torch.nn.RNN/LSTM/GRU`` where one exists, and for the plain-PyTorch
  loop of the same variant (:mod:`benchmarks.baselines`);
- the GEMM-bound time of the step: every matrix product of the step with the shape it is
  run at (for rnnkit recorded from a real step through the dispatcher; :func:`step_gemms`
  states the same list and is tested against it), each shape timed alone with ``torch.mm``
  in the same run. The roofline fraction is that time over the fastest step (1.0 =
  nothing but GEMMs);
- activation memory: the bytes a training step holds between forward and backward
  (glibc's in-use heap after the forward minus before it; empty where not glibc);
- generation throughput (characters/s) of a character model at batch 1 and batch 64,
  against the same model on the torch.nn layer with the same weights.

Run it as ``rnnkit bench`` or ``python benchmarks/bench.py``. Library code: no printing
here except through the ``log`` callable the caller passes.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import platform
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import rnnkit
from rnnkit import engine
from rnnkit.engine import native as native_loops

from . import baselines


@dataclass(frozen=True)
class Shape:
    """One point of the grid: sequence length T, batch B, input I, hidden H."""

    seq: int
    batch: int
    input: int
    hidden: int

    @property
    def name(self) -> str:
        return f"T{self.seq}-B{self.batch}-I{self.input}-H{self.hidden}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        """``SEQxBATCHxHIDDEN`` (input = hidden) or ``SEQxBATCHxINPUTxHIDDEN``."""
        try:
            parts = [int(p) for p in text.lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) == 3:
            parts = [parts[0], parts[1], parts[2], parts[2]]
        if len(parts) != 4 or min(parts) < 1:
            raise ValueError(f"shape must be SEQxBATCHxHIDDEN or SEQxBATCHxINPUTxHIDDEN with positive "
                             f"integers, got {text!r}")
        return cls(*parts)


#: the grid of the issue: (T, B, I, H), input = hidden where the issue gives none
DEFAULT_SHAPES = (Shape(128, 32, 64, 256), Shape(100, 64, 512, 512), Shape(100, 16, 128, 128),
                  Shape(1000, 8, 128, 128))
QUICK_SHAPES = (Shape(50, 16, 64, 64),)


@dataclass(frozen=True)
class Variant:
    """A cell/variant: how to build the rnnkit layer, its torch.nn twin and its loop baseline."""

    name: str
    family: str  # rnn | lstm | gru | jordan
    options: dict = field(default_factory=dict)
    #: torch.nn class of the same math, if there is one
    native: str | None = None


VARIANTS = {v.name: v for v in (
    Variant("rnn", "rnn", native="RNN"),
    Variant("lstm", "lstm", native="LSTM"),
    Variant("gru", "gru", native="GRU"),
    Variant("lstm-peephole", "lstm", {"peephole": True}),
    Variant("lstm-layernorm", "lstm", {"layer_norm": True}),
    Variant("jordan", "jordan"),
    Variant("lstm-recurrent-dropout", "lstm", {"recurrent_dropout": 0.25}),
    Variant("lstm-zoneout", "lstm", {"zoneout": 0.1}),
    Variant("lstm-proj", "lstm", {"proj_size": -2}, native="LSTM"),  # proj_size = H / 2
    Variant("gru-reset-before", "gru", {"reset_after": False}),
    Variant("gru-layernorm", "gru", {"layer_norm": True}),
)}
QUICK_VARIANTS = ("rnn", "lstm", "gru")


def _options(v: Variant, H: int) -> dict:
    opts = dict(v.options)
    if opts.get("proj_size") == -2:
        opts["proj_size"] = max(1, H // 2)
    return opts


def build(v: Variant, shape: Shape,
          device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module | None, nn.Module]:
    """(rnnkit layer, torch.nn layer or None, Python-loop baseline), all with the same weights,
    on ``device``."""
    I, H = shape.input, shape.hidden
    opts = _options(v, H)
    if v.family == "rnn":
        layer, loop = rnnkit.RNN(I, H, **opts), baselines.LoopRNN(I, H)
    elif v.family == "lstm":
        layer, loop = rnnkit.LSTM(I, H, **opts), baselines.LoopLSTM(I, H, **opts)
    elif v.family == "gru":
        layer, loop = rnnkit.GRU(I, H, **opts), baselines.LoopGRU(I, H, **opts)
    elif v.family == "jordan":
        layer, loop = rnnkit.Jordan(I, H, H, **opts), baselines.LoopJordan(I, H, H)
    else:
        raise ValueError(f"unknown family {v.family!r}")
    loop.load_state_dict(layer.state_dict())
    native = None
    if v.native is not None:
        kw = {"proj_size": opts["proj_size"]} if "proj_size" in opts else {}
        native = getattr(nn, v.native)(I, H, **kw)
        native.load_state_dict(layer.state_dict())
        native.to(device)
    return layer.to(device), native, loop.to(device)


# -- GEMM counting -----------------------------------------------------------------------------
Gemm = tuple[int, int, int, int]  # (m, k, n, count): count products of (m, k) @ (k, n)


def step_gemms(v: Variant, shape: Shape, training: bool = True) -> list[Gemm]:
    """The matrix products of one forward (and backward, if ``training``) of the variant,
    each with the shape the engine (:mod:`rnnkit.engine`, its native loops) runs it at.

    Forward: the input projection of all T·B rows, then per step the recurrent product
    (B rows; and the LSTM projection / the Jordan output). Backward: per step the product
    giving the gradient of the recurrent input (and of the projection / Jordan output), then
    one product over all T·B rows for each weight gradient (dW_hh — two for the GRU with
    the reset gate before the product —, dW_ih, dW_hr, dW_ho) and for dx. Elementwise work
    and layer norms are not counted. ``tests/test_bench.py`` checks this list against the
    products a real training step runs.
    """
    T, B, I, H = shape.seq, shape.batch, shape.input, shape.hidden
    opts = _options(v, H)
    G = {"rnn": 1, "lstm": 4, "gru": 3, "jordan": 1}[v.family] * H
    P = opts.get("proj_size", 0)
    R = P or H  # recurrent input width
    N = T * B
    fwd: list[Gemm] = [(N, I, G, 1)]
    bwd: list[Gemm] = [(G, N, I, 1), (N, G, I, 1)]  # dW_ih, dx
    if v.family == "gru" and not opts.get("reset_after", True):
        fwd += [(B, H, 2 * H, T), (B, H, H, T)]  # r, z from h; n from r ⊙ h
        bwd += [(B, H, H, T), (B, 2 * H, H, T), (2 * H, N, H, 1), (H, N, H, 1)]  # dh (n, then r, z), dW_hh
    else:
        fwd.append((B, R, G, T))
        bwd += [(B, G, R, T), (G, N, R, 1)]  # dh, dW_hh
    if P:  # h = h_full W_hrᵀ
        fwd.append((B, H, P, T))
        bwd += [(B, P, H, T), (P, N, H, 1)]  # dh_full, dW_hr
    if v.family == "jordan":  # y = ψ(h W_hoᵀ + b): the output product, dh and dW_ho
        fwd.append((B, H, H, T))
        bwd += [(B, H, H, T), (H, N, H, 1)]
    return fwd + bwd if training else fwd


def gemm_flops(gemms: Sequence[Gemm]) -> int:
    """2·m·k·n per product, times its count."""
    return sum(2 * m * k * n * c for m, k, n, c in gemms)


class _GemmRecorder(TorchDispatchMode):
    """Counts the matrix products (mm, addmm) that run under it, by (m, k, n) — also those
    the native loops issue from C++, which go through PyTorch's dispatcher."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()
        self.other: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        packet = func.overloadpacket
        if packet is torch.ops.aten.mm:
            self.counts[(args[0].shape[0], args[0].shape[1], args[1].shape[1])] += 1
        elif packet is torch.ops.aten.addmm:
            self.counts[(args[1].shape[0], args[1].shape[1], args[2].shape[1])] += 1
        elif packet in (torch.ops.aten.bmm, torch.ops.aten.baddbmm, torch.ops.aten.matmul):
            self.other[str(func)] += 1
        return func(*args, **(kwargs or {}))


def recorded_gemms(fn: Callable[[], None]) -> list[Gemm]:
    """The products ``fn`` runs, as (m, k, n, count) sorted by shape. Raises if it runs a
    batched product, which this list cannot state."""
    with _GemmRecorder() as rec:
        fn()
    if rec.other:
        raise ValueError(f"batched matrix products are not counted: {dict(rec.other)}")
    return [(*mkn, c) for mkn, c in sorted(rec.counts.items())]


def as_counts(gemms: Sequence[Gemm]) -> Counter:
    """{(m, k, n): total count}: two GEMM lists are the same work when these are equal."""
    counts: Counter = Counter()
    for m, k, n, c in gemms:
        counts[(m, k, n)] += c
    return counts


def _synchronize(device: torch.device) -> Callable[[], None]:
    """Waits for the device's queued work (CUDA runs asynchronously); a no-op on the CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def time_gemm(m: int, k: int, n: int, repeats: int = 7, device: str | torch.device = "cpu") -> float:
    """Seconds of one (m, k) @ (k, n) float32 product with ``torch.mm(out=)``: the fastest of
    ``repeats`` samples (the least disturbed by other load), each a mean over enough calls
    for ≈ 0.2 GFLOP."""
    device = torch.device(device)
    sync = _synchronize(device)
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    out = torch.empty(m, n, device=device)
    inner = max(1, min(200, int(2e8 // max(1, 2 * m * k * n))))  # ≈ 0.2 GFLOP per sample
    torch.mm(a, b, out=out)
    samples = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return min(samples)


def gemm_bound(gemms: Sequence[Gemm], seconds: Callable[[int, int, int], float]) -> float:
    """The GEMM-bound time of a step: each product at the time ``seconds(m, k, n)`` gives
    for its shape (measured alone), times its count."""
    return sum(seconds(m, k, n) * c for m, k, n, c in gemms)


def roofline_fraction(bound_s: float, step_samples: Sequence[float]) -> float:
    """GEMM-bound time over the fastest measured step (the round least disturbed by load,
    like the fastest GEMM sample the bound is made of). Above 1.0 only if the GEMMs ran
    faster inside the step than alone (e.g. oneDNN's prepacked weights), which the table
    marks instead of printing a fraction over 100%."""
    return bound_s / min(step_samples)


class GemmTimer:
    """Seconds of one product of each shape, measured once per run and cached: ``torch.mm``
    alone, the fastest sample (:func:`time_gemm`), less the per-call overhead of an empty
    1×1 product — the Python side of a call, which the native loops' per-step products
    issued from C++ do not pay. Never negative."""

    def __init__(self, measure: Callable[[int, int, int], float] = time_gemm):
        self.measure = measure
        self.overhead = measure(1, 1, 1)
        self.seconds: dict[tuple[int, int, int], float] = {}

    def __call__(self, m: int, k: int, n: int) -> float:
        if (m, k, n) not in self.seconds:
            self.seconds[(m, k, n)] = max(0.0, self.measure(m, k, n) - self.overhead)
        return self.seconds[(m, k, n)]


# -- memory ------------------------------------------------------------------------------------
class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use() -> Callable[[], int] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def in_use() -> int:
        info = fn()
        return int(info.uordblks + info.hblkhd)

    return in_use


_IN_USE = _heap_in_use()


def activation_bytes(module: nn.Module, x: torch.Tensor) -> int | None:
    """Bytes held between forward and backward of one training step (output included).

    Measured as the growth of glibc's in-use heap across the forward (on CUDA, of the
    caching allocator's allocated bytes), with rnnkit's buffer pools (the engine's and the
    native loops') emptied first so that rnnkit pays for its buffers like everyone else."""
    if x.device.type == "cuda":
        def in_use() -> int:
            torch.cuda.synchronize(x.device)
            return torch.cuda.memory_allocated(x.device)
    elif _IN_USE is None:
        return None
    else:
        in_use = _IN_USE
    engine._POOL.clear()
    native_loops.clear_pool()
    module.zero_grad(set_to_none=True)
    before = in_use()
    out, _ = module(x)
    held = in_use() - before
    out.sum().backward()
    del out
    module.zero_grad(set_to_none=True)
    return held


# -- timing ------------------------------------------------------------------------------------
def _train_step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    sync = _synchronize(x.device)

    def step() -> None:
        for p in module.parameters():
            p.grad = None
        x.grad = None
        out, _ = module(x)
        out.sum().backward()
        sync()

    return step


def _inference(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    sync = _synchronize(x.device)

    def run() -> None:
        with torch.no_grad():
            module(x)
        sync()

    return run


def interleaved_rounds(fns: dict[str, Callable[[], None]], warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds of each function per round; the functions run in turn within a round, so a
    change in machine load hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(time.perf_counter() - t0)
    return samples


def round_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """num/den of each round (the two measured in the same round)."""
    return [a / b for a, b in zip(num, den)]


def median_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """Median over rounds of num/den: robust to load that drifts between rounds."""
    return statistics.median(round_ratios(num, den))


def _ms_summary(samples: dict[str, list[float]]) -> tuple[dict, dict, dict]:
    """(median ms, [min, max] ms, every round's ms) per implementation."""
    return ({k: 1e3 * statistics.median(s) for k, s in samples.items()},
            {k: [1e3 * min(s), 1e3 * max(s)] for k, s in samples.items()},
            {k: [1e3 * t for t in s] for k, s in samples.items()})


# -- generation --------------------------------------------------------------------------------
class CharSampler(nn.Module):
    """embedding → torch.nn recurrent layer → linear head, sampled one character at a time
    for a batch of sequences: the structure of ``rnnkit.models.CharLM`` on the torch.nn
    layer, the torch.nn side of the generation comparison."""

    def __init__(self, layer: nn.Module, vocab: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, layer.input_size)
        self.layer = layer
        self.head = nn.Linear(hidden, vocab)

    @torch.no_grad()
    def sample(self, n: int, batch: int, start: int, generator: torch.Generator) -> torch.Tensor:
        """(n, batch) character ids drawn from softmax(logits), starting after ``start``."""
        token = torch.full((1, batch), start, dtype=torch.long, device=self.head.weight.device)
        state = None
        drawn = torch.empty(n, batch, dtype=torch.long)
        for t in range(n):
            out, state = self.layer(self.embed(token), state)  # (1, batch, H)
            probs = torch.softmax(self.head(out[0]), -1)  # (batch, V)
            token = torch.multinomial(probs, 1, generator=generator).view(1, batch)
            drawn[t] = token[0]
        return drawn


def generation_pair(family: str, hidden: int, vocab: int = 96, device: str | torch.device = "cpu"):
    """(rnnkit CharLM, :class:`CharSampler` on the torch.nn layer with the same weights), on
    ``device``."""
    from ..data.text import Vocabulary
    from ..models.charlm import CharLM, CharLMConfig

    chars = "".join(chr(32 + i) for i in range(vocab - 1)) + "\n"
    lm = CharLM(CharLMConfig(cell=family, hidden_size=hidden, num_layers=1, embed_size=hidden),
                Vocabulary.build(chars)).eval()
    twin = CharSampler({"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[family](hidden, hidden), len(lm.vocab),
                       hidden).eval()
    twin.embed.load_state_dict(lm.embed.state_dict())
    twin.layer.load_state_dict(lm.rnn.state_dict())
    twin.head.load_state_dict(lm.head.state_dict())
    return lm.to(device), twin.to(device)


def generation_throughput(family: str, hidden: int, n_steps: int, batch: int, rounds: int,
                          warmup: int = 1, device: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Characters per second of each round, ``batch`` sequences of ``n_steps`` characters:
    rnnkit through ``CharLM.sample`` at batch 1 and :meth:`CharLM.sample_many`
    (``rnnkit sample --num-samples``) above; torch.nn through :class:`CharSampler` with the
    same weights. The two alternate within each round."""

    device = torch.device(device)
    lm, twin = generation_pair(family, hidden, device=device)
    start = lm.vocab.id("\n")
    sync = _synchronize(device)

    def rnnkit_run(n: int) -> None:
        if batch == 1:
            "".join(lm.sample(n, seed=0))
        else:
            lm.sample_many(batch, n, seed=0)

    runs = {"rnnkit": rnnkit_run,
            "torch.nn": lambda n: twin.sample(n, batch, start, torch.Generator(device=device).manual_seed(0))}
    for _ in range(warmup):
        for sample in runs.values():
            sample(10)
    per_round: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for impl, sample in runs.items():
            sync()
            t0 = time.perf_counter()
            sample(n_steps)
            sync()
            per_round[impl].append(batch * n_steps / (time.perf_counter() - t0))
    return per_round


def generation_row(family: str, batch: int, per_round: dict[str, list[float]]) -> dict:
    """The median, range and rnnkit/torch.nn ratio (median and worst round) of chars/s."""
    ratios = round_ratios(per_round["rnnkit"], per_round["torch.nn"])
    return {"family": family, "batch": batch,
            "chars_per_s": {k: statistics.median(v) for k, v in per_round.items()},
            "range": {k: [min(v), max(v)] for k, v in per_round.items()},
            "ratio": statistics.median(ratios), "worst": min(ratios)}


# -- the run -----------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    shapes: tuple[Shape, ...] = DEFAULT_SHAPES
    variants: tuple[str, ...] = tuple(VARIANTS)
    warmup: int = 1
    rounds: int = 3
    #: characters generated per sequence for the generation throughput (0: skip)
    sample_chars: int = 300
    sample_hidden: int = 256
    #: batch sizes of the generation throughput (``rnnkit sample --num-samples``)
    sample_batches: tuple[int, ...] = (1, 64)
    seed: int = 0
    #: "cpu" or "cuda" (torch.nn then runs cuDNN)
    device: str = "cpu"

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(shapes=QUICK_SHAPES, variants=QUICK_VARIANTS, warmup=1, rounds=2, sample_chars=50,
                   sample_hidden=64)


#: the cells whose generation speed is measured (when in the run's variants)
GENERATION_FAMILIES = ("lstm", "gru")


def bench_one(v: Variant, shape: Shape, cfg: BenchConfig, gemm_seconds: Callable[[int, int, int], float]) -> dict:
    with warnings.catch_warnings():  # torch.nn.LSTM with proj_size warns that oneDNN does not cover it
        warnings.filterwarnings("ignore", message=".*not supported with oneDNN.*")
        return _bench_one(v, shape, cfg, gemm_seconds)


def _bench_one(v: Variant, shape: Shape, cfg: BenchConfig, gemm_seconds: Callable[[int, int, int], float]) -> dict:
    torch.manual_seed(cfg.seed)
    layer, native, loop = build(v, shape, cfg.device)
    # x needs its gradient, as for any layer above the first: the step includes dx
    x = torch.randn(shape.seq, shape.batch, shape.input, device=cfg.device, requires_grad=True)
    impls = {"rnnkit": layer, "loop": loop}
    if native is not None:
        impls["native"] = native
    if v.name != "lstm":  # the variants' yardstick: torch.nn.LSTM at the same shape
        impls["torch.nn.LSTM"] = nn.LSTM(shape.input, shape.hidden, device=cfg.device)
    for m in impls.values():
        m.train()
    train = interleaved_rounds({k: _train_step(m, x) for k, m in impls.items()}, cfg.warmup, cfg.rounds)
    for m in impls.values():  # inference as deployed: eval mode (no dropout/zoneout masks), no grad
        m.eval()
    infer = interleaved_rounds({k: _inference(m, x) for k, m in impls.items()}, cfg.warmup, cfg.rounds)
    for m in impls.values():
        m.train()
    lstm_key = "native" if v.name == "lstm" else "torch.nn.LSTM"

    # the roofline: rnnkit's products as one real step runs them; torch.nn (oneDNN, whose
    # products the dispatcher does not see) by the same count, step_gemms
    gemms = step_gemms(v, shape, training=True)
    ran = recorded_gemms(_train_step(layer, x))
    bound_ran, bound_model = gemm_bound(ran, gemm_seconds), gemm_bound(gemms, gemm_seconds)
    roofline = {"rnnkit": roofline_fraction(bound_ran, train["rnnkit"])}
    if native is not None:
        roofline["native"] = roofline_fraction(bound_model, train["native"])
    memory = {k: activation_bytes(m, x) for k, m in impls.items() if k in ("rnnkit", "native", "torch.nn.LSTM")}

    train_ms, train_range, train_rounds = _ms_summary(train)
    infer_ms, infer_range, infer_rounds = _ms_summary(infer)
    ratios = {"train_vs_lstm": round_ratios(train["rnnkit"], train[lstm_key]),
              "loop_speedup": round_ratios(train["loop"], train["rnnkit"])}
    if native is not None:
        ratios["train_vs_native"] = round_ratios(train["rnnkit"], train["native"])
        ratios["inference_vs_native"] = round_ratios(infer["rnnkit"], infer["native"])
    row = {
        "variant": v.name,
        "shape": shape.name,
        "train_ms": train_ms,
        "train_ms_range": train_range,
        "train_rounds_ms": train_rounds,
        "inference_ms": infer_ms,
        "inference_ms_range": infer_range,
        "inference_rounds_ms": infer_rounds,
        "train_vs_native": statistics.median(ratios["train_vs_native"]) if native is not None else None,
        "train_vs_lstm": statistics.median(ratios["train_vs_lstm"]),
        "loop_speedup": statistics.median(ratios["loop_speedup"]),
        "inference_vs_native": statistics.median(ratios["inference_vs_native"]) if native is not None else None,
        # the worst round of each ratio: the largest slowdown, the smallest speed-up
        "worst": {k: (min(r) if k == "loop_speedup" else max(r)) for k, r in ratios.items()},
        "gflop": gemm_flops(gemms) / 1e9,
        "gemm_ms": 1e3 * bound_ran,
        "gemms_as_counted": as_counts(ran) == as_counts(gemms),
        "roofline": roofline,
        "activation_mb": {k: None if b is None else b / 2**20 for k, b in memory.items()},
    }
    mem_lstm = memory.get(lstm_key)
    row["memory_vs_lstm"] = (memory["rnnkit"] / mem_lstm) if mem_lstm and memory["rnnkit"] is not None else None
    return row


def environment(device: str = "cpu") -> dict:
    dev = torch.device(device)
    return {
        "torch": torch.__version__,
        "rnnkit": rnnkit.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "device": f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else dev.type,
        "dtype": "float32",
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> float | None:
    """The 1-minute load average (None where the system has none): how busy the machine was."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def peak_gemm_gflops(size: int = 1024, device: str | torch.device = "cpu") -> float:
    """Throughput of one large square float32 GEMM: the machine's peak for reference."""
    return 2 * size**3 / time_gemm(size, size, size, repeats=5, device=device) / 1e9


def run(cfg: BenchConfig, log: Callable[[str], None] = lambda s: None,
        on_progress: Callable[[dict], None] | None = None) -> dict:
    """Measure the whole grid; returns the JSON-able results. ``on_progress`` is called
    with the results so far (``"complete": False``) after every point of the grid."""
    unknown = [v for v in cfg.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown cell(s) {unknown}; expected some of {list(VARIANTS)}")
    if torch.device(cfg.device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {cfg.device!r} asked for, but torch.cuda.is_available() is False")
    t_start = time.perf_counter()
    gemm_seconds = GemmTimer(functools.partial(time_gemm, device=cfg.device))
    results = {
        "environment": environment(cfg.device),
        "config": {**asdict(cfg), "shapes": [asdict(s) for s in cfg.shapes]},
        "peak_gemm_gflops": peak_gemm_gflops(device=cfg.device),
        "gemm_call_overhead_us": 1e6 * gemm_seconds.overhead,
        #: the 1-minute load average at the start and (when complete) at the end of the run
        "load_average": [_load_average()],
        "results": [],
        "sampling": {"hidden": cfg.sample_hidden, "steps": cfg.sample_chars, "rows": []},
        "seconds": 0.0,
        "complete": False,
    }
    for shape in cfg.shapes:
        for name in cfg.variants:
            t0 = time.perf_counter()
            row = bench_one(VARIANTS[name], shape, cfg, gemm_seconds)
            results["results"].append(row)
            results["seconds"] = time.perf_counter() - t_start
            log(f"{shape.name:<24} {name:<24} rnnkit {row['train_ms']['rnnkit']:8.1f} ms  "
                f"vs torch.nn.LSTM {row['train_vs_lstm']:.2f}x  ({time.perf_counter() - t0:.0f} s)")
            if not row["gemms_as_counted"]:
                log(f"  note: the products of {name} differ from step_gemms; its roofline uses those it ran")
            if on_progress is not None:
                on_progress(results)
    if cfg.sample_chars:
        for family in GENERATION_FAMILIES:
            if family not in cfg.variants:
                continue
            for batch in cfg.sample_batches:
                per_round = generation_throughput(family, cfg.sample_hidden, cfg.sample_chars, batch, cfg.rounds,
                                                  cfg.warmup, cfg.device)
                gen = generation_row(family, batch, per_round)
                results["sampling"]["rows"].append(gen)
                log(f"generation {family} batch {batch}: " + ", ".join(
                    f"{k} {v:.0f} chars/s" for k, v in gen["chars_per_s"].items()) + f" ({gen['ratio']:.2f}x)")
    results["seconds"] = time.perf_counter() - t_start
    results["load_average"].append(_load_average())
    results["complete"] = True
    return results


# -- report ------------------------------------------------------------------------------------
TARGETS = {
    "native": "rnnkit.RNN/LSTM/GRU training step no slower than torch.nn (ratio ≤ 1.0)",
    "variants": "every variant within 1.10× of torch.nn.LSTM's training step and ≥ 3× faster than the Python loop",
    "inference": "rnnkit.RNN/LSTM/GRU inference (forward only, eval mode, no grad) no slower than torch.nn "
                 "(ratio ≤ 1.0)",
    "generation": "generation (characters/s of CharLM.sample-style sampling, batch 1 and batch 64) at least "
                  "torch.nn's with the same weights (ratio ≥ 1.0)",
    "roofline": "≥ 80% of the GEMM roofline at the two largest shapes (by FLOPs)",
    "memory": "activation memory of a training step ≤ torch.nn.LSTM's",
}

#: what limits each target where it is missed (docs/performance.md has the measurements)
LIMITS = {
    "native": "the per-step recurrent GEMM: a (B × H)·(H × 4H) BLAS call per step pays its set-up every "
              "step, while oneDNN's fused RNN reuses prepacked weights across steps; the gate math of the "
              "native LSTM and GRU loops is fused and vectorized like oneDNN's.",
    "variants": "×LSTM: layer norm adds two normalizations per step (and zoneout a pass) to the LSTM's "
                "work. loop÷: where the step is GEMM-bound (large batch and hidden "
                "sizes) the plain loop spends most of its time in the same GEMMs, so no implementation can "
                "be 3× faster than it; the 3× is reachable only where per-step overhead dominates.",
    "inference": "the plain LSTM's inference runs torch.nn.LSTM's own kernel (oneDNN's fused LSTM, handed "
                 "over by its binding), so its ratio is 1.0 up to rnnkit's Python (under 1% of a call) and "
                 "the machine's noise, which puts a single round on either side; the GRU, the RNN and the "
                 "LSTM's variants run the forward-only native loops (infer.cpp), whose per-step recurrent "
                 "BLAS GEMM at 8–32 rows is slower than oneDNN's with its prepacked weights.",
    "generation": "a cell option without a native step (layer norm, zoneout, bidirectional, Jordan) runs the "
                  "whole layer on a 1-step sequence per character: the layer's argument handling and the "
                  "engine's set-up run per character, against torch.nn's one fused C++ call; the native "
                  "StackStep (one call per character for the whole stack) covers the plain cells.",
    "roofline": "the roofline times every product alone at its own shape (the per-step (B × H)·(H × G) "
                "products run far below the machine's large-GEMM peak); what is left is the gate math "
                "(elementwise, memory-bound) and per-step overhead.",
    "memory": "what the backward must keep per step (gates, c, and with layer norm the normalized "
              "recurrent projection and cell) against oneDNN's workspace.",
}


#: what limits each target on CUDA, where every cell runs the Python engine today
CUDA_LIMIT = ("on CUDA every rnnkit cell runs the Python engine (about a dozen kernel launches per step, "
              "each paying its launch latency) against cuDNN's fused kernels (issue #15: GPU kernels).")


def _limit(results: dict, key: str) -> str:
    on_cuda = str(results["environment"].get("device", "cpu")).startswith("cuda")
    return CUDA_LIMIT if on_cuda and key not in ("roofline", "memory") else LIMITS[key]


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:{spec}}{suffix}"


def _worst(r: dict, key: str) -> float | None:
    """The worst round's ratio (the median in the JSON of a run from before rounds were kept)."""
    return r.get("worst", {}).get(key, r[key])


def check_targets(results: dict) -> dict[str, list[str]]:
    """The points that miss each target (empty list: met), judged by the worst round."""
    rows = results["results"]
    misses: dict[str, list[str]] = {k: [] for k in TARGETS}
    by_flops = sorted({r["shape"]: r["gflop"] for r in rows if r["variant"] == "lstm"}.items(), key=lambda kv: -kv[1])
    large = {s for s, _ in by_flops[:2]}
    for r in rows:
        where = f"{r['variant']} @ {r['shape']}"
        classic = r["variant"] in ("rnn", "lstm", "gru")
        if classic and r["train_vs_native"] is not None and _worst(r, "train_vs_native") > 1.0:
            misses["native"].append(f"{where}: {_worst(r, 'train_vs_native'):.2f}×")
        if classic and r.get("inference_vs_native") is not None and _worst(r, "inference_vs_native") > 1.0:
            misses["inference"].append(f"{where}: {_worst(r, 'inference_vs_native'):.2f}×")
        if not classic:
            if _worst(r, "train_vs_lstm") > 1.10:
                misses["variants"].append(f"{where}: {_worst(r, 'train_vs_lstm'):.2f}× torch.nn.LSTM")
            if _worst(r, "loop_speedup") < 3.0:
                misses["variants"].append(f"{where}: only {_worst(r, 'loop_speedup'):.1f}× the loop")
        if r["shape"] in large and r["roofline"]["rnnkit"] < 0.8:
            misses["roofline"].append(f"{where}: {100 * r['roofline']['rnnkit']:.0f}%")
        if r["memory_vs_lstm"] is not None and r["memory_vs_lstm"] > 1.0:
            misses["memory"].append(f"{where}: {r['memory_vs_lstm']:.2f}×")
    for g in results.get("sampling", {}).get("rows", []):
        if g["worst"] < 1.0:
            misses["generation"].append(f"{g['family']} batch {g['batch']}: {g['worst']:.2f}× torch.nn's chars/s")
    if not results.get("sampling", {}).get("rows"):
        del misses["generation"]  # not measured in this run
    if not any(r.get("inference_vs_native") is not None for r in rows):
        del misses["inference"]
    return misses


def _timed(r: dict, phase: str, impl: str) -> str:
    """'median (min–max)' in ms of one timed column; '–' where the implementation is absent."""
    med = r[f"{phase}_ms"].get(impl)
    if med is None:
        return "–"
    span = r.get(f"{phase}_ms_range", {}).get(impl)
    return f"{med:.1f}" if span is None else f"{med:.1f} ({span[0]:.1f}–{span[1]:.1f})"


def _ratio(r: dict, key: str, spec: str = ".2f") -> str:
    """'median (worst)' of a ratio column."""
    if r[key] is None:
        return "–"
    worst = r.get("worst", {}).get(key)
    return f"{r[key]:{spec}}" if worst is None else f"{r[key]:{spec}} ({worst:{spec}})"


def _roof(x: float) -> str:
    """A roofline fraction; one above 1 (the products ran faster inside the step than alone)
    is marked, not printed as a fraction over 100%."""
    return "≥100%†" if x > 1.0 else f"{100 * x:.0f}%"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _load_text(results: dict) -> str:
    """' on N CPUs, load average … (start → end)' where the run recorded it."""
    load = [x for x in results.get("load_average") or [] if x is not None]
    cpus = results["environment"].get("cpus")
    if not load or not cpus:
        return ""
    span = f"{load[0]:.1f}" if len(load) == 1 else f"{load[0]:.1f} at the start, {load[-1]:.1f} at the end"
    busy = " — other jobs shared the machine: compare ratios, not times" if max(load) > 0.5 * cpus else ""
    return f" on {_count(cpus, 'CPU')} (1-minute load average {span}{busy})"


def to_markdown(results: dict) -> str:
    env = results["environment"]
    rounds = results["config"]["rounds"]
    lines = [
        "# rnnkit benchmarks",
        "",
        f"Generated by `{results.get('command', 'rnnkit bench')}` — do not edit by hand; see "
        "docs/performance.md for the method.",
        "",
        f"Machine: {env['processor']} ({env['machine']}), {_count(env['threads'], 'thread')}"
        f"{_load_text(results)}, torch {env['torch']}, "
        f"{env['dtype']} on {env['device']}. Peak GEMM (1024³): {results['peak_gemm_gflops']:.0f} GFLOP/s "
        f"(for reference only: the roofline times each product at its own shape). "
        f"{rounds} interleaved rounds after {results['config']['warmup']} warm-up; whole run "
        f"{results['seconds']:.0f} s."
        + ("" if results.get("complete", True) else " **Partial run**: interrupted before the end of the grid."),
        "",
        "Columns: training step (forward + backward) in ms for rnnkit, torch.nn (same cell, where one exists) "
        "and the plain PyTorch loop, each the median with the fastest and slowest round in parentheses; "
        "**×nn** = rnnkit / torch.nn (same cell); **×LSTM** = rnnkit / torch.nn.LSTM at the same shape; "
        "**loop÷** = how many times faster rnnkit is than the loop — each ratio the median of the per-round "
        "ratios with the worst round in parentheses; **roofline** = GEMM-bound time (every matrix product of "
        "the step as the implementation runs it, each timed alone at its own shape) / fastest step "
        "(rnnkit, torch.nn); **act MB** = activation memory of a training step (rnnkit, ×torch.nn.LSTM); "
        "inference (forward only, eval mode, no grad) in ms (rnnkit / torch.nn).",
    ]
    shapes = list(dict.fromkeys(r["shape"] for r in results["results"]))
    over = False
    for shape in shapes:
        lines += ["", f"## {shape}", "",
                  "| cell | train rnnkit | train torch.nn | train loop | ×nn | ×LSTM | loop÷ | roofline | "
                  "act MB | inference rnnkit / nn |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in results["results"] if r["shape"] == shape):
            roof = _roof(r["roofline"]["rnnkit"])
            if "native" in r["roofline"]:
                roof += " / " + _roof(r["roofline"]["native"])
            over = over or "†" in roof
            mem = _fmt(r["activation_mb"].get("rnnkit"), ".1f")
            if r["memory_vs_lstm"] is not None:
                mem += f" ({r['memory_vs_lstm']:.2f}×)"
            lines.append(
                f"| {r['variant']} | {_timed(r, 'train', 'rnnkit')} | {_timed(r, 'train', 'native')} | "
                f"{_timed(r, 'train', 'loop')} | {_ratio(r, 'train_vs_native')} | {_ratio(r, 'train_vs_lstm')} | "
                f"{_ratio(r, 'loop_speedup', '.1f')} | {roof} | {mem} | "
                f"{_timed(r, 'inference', 'rnnkit')} / {_timed(r, 'inference', 'native')} |")
    if over:
        lines += ["", "† the GEMM-bound time came out above the fastest measured step: the products ran faster "
                  "inside the step than alone (oneDNN's prepacked weights, or load that changed between the two "
                  "measurements), so no fraction is given."]
    sampling = results.get("sampling", {})
    if sampling.get("rows"):
        lines += ["", f"## Generation (characters/s, hidden {sampling['hidden']}, {sampling['steps']} characters "
                  "per sequence)", "",
                  "rnnkit: `CharLM.sample` at batch 1, `rnnkit sample --num-samples` (`CharLM.sample_many`) above; "
                  "torch.nn: the same embedding → layer → head on the torch.nn layer with the same weights, one "
                  "step at a time. Median chars/s (fastest–slowest round); ×nn = rnnkit / torch.nn, median of "
                  "the per-round ratios (worst round).", "",
                  "| cell | batch | rnnkit | torch.nn | ×nn |", "|---|---:|---:|---:|---:|"]
        for g in sampling["rows"]:
            cps, rng = g["chars_per_s"], g["range"]
            lines.append(f"| {g['family']} | {g['batch']} | {cps['rnnkit']:.0f} ({rng['rnnkit'][0]:.0f}–"
                         f"{rng['rnnkit'][1]:.0f}) | {cps['torch.nn']:.0f} ({rng['torch.nn'][0]:.0f}–"
                         f"{rng['torch.nn'][1]:.0f}) | {g['ratio']:.2f} ({g['worst']:.2f}) |")
    if "scan" in results:
        lines += ["", "## Training time versus sequence length (parallel scan vs sequential loop)", "",
                  results["scan"]["markdown"].rstrip()]
    judged = (f"Each judged by the worst of the {rounds} rounds (the largest slowdown, the smallest speed-up), "
              "not the median." if all("worst" in r for r in results["results"]) else
              "Judged by the medians: the JSON of this run predates the per-round figures.")
    lines += ["", "## Targets", "", judged, ""]
    for key, misses in check_targets(results).items():
        status = ("met" if not misses else
                  "**missed**: " + "; ".join(misses) + f". *What limits it:* {_limit(results, key)}")
        lines.append(f"- {TARGETS[key]}: {status}")
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_outputs(results: dict, markdown_path: str | None, json_path: str | None) -> None:
    """Write the JSON and the Markdown table (each replaced whole, never half-written)."""
    if json_path:
        _write_atomic(json_path, json.dumps(results, indent=1))
    if markdown_path:
        _write_atomic(markdown_path, to_markdown(results))


if __name__ == "__main__":
    from rnnkit.cli import main

    raise SystemExit(main(["bench"]))
