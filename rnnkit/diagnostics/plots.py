"""PNG pictures of the diagnostics (matplotlib, Agg backend; ``pip install rnnkit[plot]``).

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` built without pyplot's
global state; :func:`save_png` writes it, :func:`png_bytes` encodes it for embedding.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .gates import GateSaturation
from .gradflow import GradFlowResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GATE_COLOURS = {"i": "tab:green", "f": "tab:blue", "o": "tab:red", "r": "tab:purple", "z": "tab:orange"}
GATE_NAMES = {"i": "input", "f": "forget", "o": "output", "r": "reset", "z": "update"}


def _figure(width: float, height: float) -> Figure:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'rnnkit[plot]'") from e
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as PNG (creating parent folders) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def plot_gradient_norms(per_step: Mapping[str, Tensor], jacobian_norms: Mapping[str, Tensor] | None = None,
                        title: str = "Gradient flow through time") -> Figure:
    """‖∂L/∂h_t‖ against t (log scale), one line per layer; with ``jacobian_norms`` a second
    panel of σ_max(∂s_t/∂s_{t-1}) with the line σ = 1 that separates shrinking from growing."""
    if not per_step:
        raise ValueError("per_step is empty: no gradient norms to plot")
    panels = 2 if jacobian_norms else 1
    fig = _figure(6.0 * panels, 3.6)
    ax = fig.add_subplot(1, panels, 1)
    for name, v in per_step.items():
        ax.semilogy(v.detach().double().cpu().clamp_min(1e-300).numpy(), label=name)
    ax.set_xlabel("time step t")
    ax.set_ylabel("‖∂L/∂h_t‖ (batch mean)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if jacobian_norms:
        ax2 = fig.add_subplot(1, 2, 2)
        for name, v in jacobian_norms.items():
            ax2.plot(range(1, len(v) + 1), v.detach().double().cpu().numpy(), label=name)
        ax2.axhline(1.0, color="k", lw=0.8, ls="--")
        ax2.set_xlabel("time step t")
        ax2.set_ylabel("σ_max(∂s_t/∂s_{t-1})")
        ax2.set_title("Spectral norm of the recurrent Jacobian")
        ax2.grid(True, alpha=0.3)
        ax2.legend(fontsize=8)
    return fig


def plot_gradflow(results: Sequence[GradFlowResult], title: str = "") -> Figure:
    """The picture of :func:`~rnnkit.diagnostics.fresh_gradient_flow`: gradient norms and
    Jacobian spectral norms per cell, and, when clipping was demonstrated, the training loss
    with and without clipping."""
    if not results:
        raise ValueError("no gradient-flow results to plot")
    clip = any(r.loss_unclipped for r in results)
    panels = 3 if clip else 2
    fig = _figure(5.2 * panels, 3.8)
    ax1, ax2 = fig.add_subplot(1, panels, 1), fig.add_subplot(1, panels, 2)
    for r in results:
        line, = ax1.semilogy(r.grad_norms.double().clamp_min(1e-300).numpy(),
                             label=f"{r.cell}  (first/last: {r.first_last_ratio:.2g})")
        ax2.plot(range(1, len(r.jacobian_norms) + 1), r.jacobian_norms.numpy(), color=line.get_color(),
                 label=r.cell)
    ax1.set(xlabel="time step t", ylabel="‖∂L/∂h_t‖, loss at the last step", title=title or "Gradient flow")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.axhline(1.0, color="k", lw=0.8, ls="--")
    ax2.set(xlabel="time step t", ylabel="σ_max(∂s_t/∂s_{t-1})", title="Recurrent Jacobian")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    if clip:
        ax3 = fig.add_subplot(1, 3, 3)
        for r in results:
            if r.loss_unclipped:
                line, = ax3.semilogy(r.loss_unclipped, label=f"{r.cell}, no clipping")
                ax3.semilogy(r.loss_clipped, ls="--", color=line.get_color(), label=f"{r.cell}, clipped")
        ax3.set(xlabel="SGD step", ylabel="loss (memory task)", title="Effect of gradient clipping")
        ax3.grid(True, which="both", alpha=0.3)
        ax3.legend(fontsize=8)
    return fig


def plot_gate_saturation(saturation: Mapping[str, GateSaturation]) -> Figure:
    """Karpathy et al. (2015), Fig. 3: every gate unit is a point at (fraction of steps
    left-saturated, fraction right-saturated); one panel per layer, one colour per gate."""
    if not saturation:
        raise ValueError("no gate statistics to plot (the model has no gated layer)")
    n = len(saturation)
    fig = _figure(3.6 * n, 3.8)
    for k, (key, sat) in enumerate(saturation.items()):
        ax = fig.add_subplot(1, n, k + 1)
        ax.plot([0, 1], [1, 0], color="0.7", lw=0.8)  # left + right ≤ 1
        for gname in sat.left:
            ax.scatter(sat.left[gname].cpu().numpy(), sat.right[gname].cpu().numpy(), s=12, alpha=0.6,
                       color=GATE_COLOURS.get(gname), label=GATE_NAMES.get(gname, gname))
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="fraction left-saturated (< 0.1)",
               ylabel="fraction right-saturated (> 0.9)", title=key, aspect="equal")
        ax.legend(fontsize=8, loc="upper right")
    return fig


def plot_text_activation(text: str, values: Tensor | Sequence[float], title: str = "",
                         width: int = 80, max_lines: int = 40) -> Figure:
    """The text in a monospace grid, each character's background coloured by the unit's
    activation (blue negative, red positive, scaled by the largest |value|), as in
    Karpathy et al. (2015), Fig. 2."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(values) != len(text):
        raise ValueError(f"values has {len(values)} entries for a text of {len(text)} characters")
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    rows: list[list[tuple[str, float]]] = [[]]
    for ch, v in zip(text, values.tolist()):
        if ch == "\n" or len(rows[-1]) >= width:
            if ch == "\n":
                rows[-1].append(("↵", v))
            rows.append([])
            if ch == "\n":
                continue
        rows[-1].append((ch, v))
    rows = rows[:max_lines]
    scale = float(values.abs().max()) or 1.0
    cmap = colormaps["bwr"]
    cw, ch_h = 0.11, 0.2  # inches per character cell
    fig = _figure(max(2.0, cw * width + 0.4), ch_h * len(rows) + 0.7)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(0, width)
    ax.set_ylim(len(rows), 0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    for y, row in enumerate(rows):
        for x, (c, v) in enumerate(row):
            ax.add_patch(Rectangle((x, y), 1, 1, color=cmap(0.5 + 0.5 * v / scale), lw=0))
            ax.text(x + 0.5, y + 0.55, c, ha="center", va="center", family="monospace", fontsize=7.5)
    return fig


def plot_attention(weights: Tensor, source: Sequence[str], target: Sequence[str],
                   title: str = "Attention") -> Figure:
    """Heat map of attention weights (T_out, T_in): row j is the distribution over source
    tokens used to emit target token j (Bahdanau et al. 2015, Fig. 3)."""
    w = torch.as_tensor(weights).detach().double().cpu()
    if w.dim() != 2:
        raise ValueError(f"weights must be (T_out, T_in) for one example, got shape {tuple(w.shape)}")
    if w.shape != (len(target), len(source)):
        raise ValueError(f"weights shape {tuple(w.shape)} does not match {len(target)} target and "
                         f"{len(source)} source tokens")
    fig = _figure(min(1.2 + 0.32 * len(source), 16), min(1.2 + 0.32 * len(target), 16))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(w.numpy(), cmap="Greys", vmin=0.0, vmax=max(float(w.max()), 1e-12), aspect="auto")
    ax.set_xticks(range(len(source)), [str(s) for s in source], rotation=90, fontsize=8)
    ax.set_yticks(range(len(target)), [str(t) for t in target], fontsize=8)
    ax.set(xlabel="source", ylabel="target", title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def plot_metrics(metrics: Sequence[Mapping[str, float]]) -> Figure:
    """Training curves from a metrics log (one dict per line of metrics.jsonl): every
    ``*_bpc`` / ``*_loss`` / ``*_score`` key against ``step``."""
    keys = sorted({k for m in metrics for k in m if k.endswith(("_bpc", "_loss", "_score"))})
    if not keys:
        raise ValueError("metrics have no *_bpc, *_loss or *_score entries to plot")
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for key in keys:
        pts = [(m["step"], m[key]) for m in metrics
               if "step" in m and isinstance(m.get(key), (int, float)) and math.isfinite(m[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, ms=3, label=key)
    ax.set(xlabel="step", ylabel="bits per character" if all(k.endswith("_bpc") for k in keys) else "value",
           title="Training curves")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig
