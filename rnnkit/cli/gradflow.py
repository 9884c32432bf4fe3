"""``rnnkit gradflow``: the vanishing / exploding gradient picture for fresh cells."""

from __future__ import annotations

import argparse
from dataclasses import fields

from . import add_command


def register(subparsers) -> None:
    from ..diagnostics.gradflow import GradFlowConfig
    from ..layers import INIT_SCHEMES

    d = {f.name: f.default for f in fields(GradFlowConfig)}
    p = add_command(subparsers, "gradflow", "plot ‖∂L/∂h_t‖ through time for freshly initialised cells",
                    "A fresh layer per cell reads random input; the loss is a random projection of the last "
                    "hidden state, so the plot shows how much gradient reaches each earlier step "
                    "(vanishing for the tanh RNN, exploding with --scale > 1), next to the spectral norm "
                    "of the step Jacobian. --clip adds a short training run with and without clipping.")
    p.add_argument("--cell", default=",".join(d["cells"]),
                   help="cell name or comma-separated names (rnn, irnn, lstm, gru, jordan; default %(default)s)")
    p.add_argument("--seq-len", type=int, default=d["seq_len"], help="time steps T (default %(default)s)")
    p.add_argument("--hidden-size", type=int, default=d["hidden_size"], help="H (default %(default)s)")
    p.add_argument("--input-size", type=int, default=d["input_size"], help="I (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"], help="B (default %(default)s)")
    p.add_argument("--init", choices=INIT_SCHEMES, default=d["init"], help="initialisation (default %(default)s)")
    p.add_argument("--scale", type=float, default=d["scale"],
                   help="multiply weight_hh by this after init (default %(default)s)")
    p.add_argument("--forget-bias", type=float, default=d["forget_bias"], help="LSTM forget-gate bias")
    p.add_argument("--clip", type=float, default=d["clip"],
                   help="also train on a memory task with and without clipping the gradient norm to this")
    p.add_argument("--seed", type=int, default=d["seed"], help="random seed (default %(default)s)")
    p.add_argument("--out", default="gradflow.png", help="PNG to write (default %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..diagnostics.gradflow import GradFlowConfig, fresh_gradient_flow
    from ..diagnostics.plots import plot_gradflow, save_png

    cells = tuple(c.strip() for c in args.cell.split(",") if c.strip())
    if not cells:
        raise ValueError("--cell needs at least one cell name")
    for name, v in [("--seq-len", args.seq_len), ("--hidden-size", args.hidden_size),
                    ("--input-size", args.input_size), ("--batch-size", args.batch_size)]:
        if v < 1:
            raise ValueError(f"{name} must be positive, got {v}")
    cfg = GradFlowConfig(cells=cells, seq_len=args.seq_len, hidden_size=args.hidden_size,
                         input_size=args.input_size, batch_size=args.batch_size, init=args.init,
                         scale=args.scale, forget_bias=args.forget_bias, clip=args.clip, seed=args.seed)
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
