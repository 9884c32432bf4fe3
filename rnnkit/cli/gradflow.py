"""``rnnkit gradflow``: the vanishing / exploding gradient picture for fresh cells."""

from __future__ import annotations

import argparse

from . import add_command


def register(subparsers) -> None:
    from ..diagnostics.gradflow import GradFlowConfig
    from ..layers import INIT_SCHEMES
    from ._options import add_dataclass_options

    p = add_command(subparsers, "gradflow", "plot ‖∂L/∂h_t‖ through time for freshly initialised cells",
                    "A fresh layer per cell reads random input; the loss is a random projection of the last "
                    "hidden state, so the plot shows how much gradient reaches each earlier step "
                    "(vanishing for the tanh RNN, exploding with --scale > 1), next to the spectral norm "
                    "of the step Jacobian. --clip adds a short training run with and without clipping.")
    p.add_argument("--cell", default=",".join(GradFlowConfig.cells),
                   help="cell name or comma-separated names (rnn, irnn, lstm, gru, jordan; default %(default)s)")
    add_dataclass_options(p, GradFlowConfig, exclude=("cells",), choices={"init": INIT_SCHEMES})
    p.add_argument("--out", default="gradflow.png", help="PNG to write (default %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..diagnostics.gradflow import GradFlowConfig, fresh_gradient_flow
    from ..diagnostics.plots import plot_gradflow, save_png
    from ._options import given

    cells = tuple(c.strip() for c in args.cell.split(",") if c.strip())
    if not cells:
        raise ValueError("--cell needs at least one cell name")
    options = given(args, GradFlowConfig)
    for name in ("seq_len", "hidden_size", "input_size", "batch_size", "clip_steps"):
        if name in options and options[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {options[name]}")
    cfg = GradFlowConfig(cells=cells, **options)
    results = fresh_gradient_flow(cfg)
    T = cfg.seq_len
    at = sorted({0, T // 4, T // 2, 3 * T // 4, T - 1})
    print(f"‖∂L/∂h_t‖ (mean over {cfg.batch_size} sequences), loss at t = {T - 1}; init {cfg.init}, "
          f"weight_hh × {cfg.scale:g}")
    print(f"{'cell':<8}" + "".join(f"{'t=' + str(t):>11}" for t in at) + f"{'first/last':>12}{'mean σ_max':>12}")
    for r in results:
        print(f"{r.cell:<8}" + "".join(f"{float(r.grad_norms[t]):>11.3e}" for t in at)
              + f"{r.first_last_ratio:>12.3e}{float(r.jacobian_norms.mean()):>12.3f}")
    if cfg.clip is not None:
        print(f"\nmemory task, {cfg.clip_steps} SGD steps at lr {cfg.clip_lr:g}: final loss without / with "
              f"clipping to {cfg.clip:g}, largest gradient norm")
        for r in results:
            print(f"{r.cell:<8}{r.loss_unclipped[-1]:>12.4g}{r.loss_clipped[-1]:>12.4g}"
                  f"{max(r.grad_total_unclipped):>12.3e}")
    path = save_png(plot_gradflow(results), args.out)
    print(f"\nwrote {path}")
    return 0
