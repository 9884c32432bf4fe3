"""The gap between batch and running statistics of the batch-normalized LSTM, and its fix:
``python benchmarks/bnlstm_statistics.py [--task temporal-order] [--seq-len 50] [--steps 200]``.

Trains ``rnnkit task``'s model with ``batch_norm=True`` for a step budget, then prints the test
loss in evaluation mode with the running statistics (momentum 0.1), in training mode (the
statistics of the test batch itself), and in evaluation mode after the population statistics
are re-estimated over 50 fresh training batches (``batch_norm_momentum=None``: a cumulative
average)."""

from __future__ import annotations

import argparse
import copy
import dataclasses

import torch

from rnnkit.tasks.run import TaskRunConfig, run_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="temporal-order")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = TaskRunConfig(task=args.task, cell="lstm", seq_len=args.seq_len, max_steps=args.steps,
                           eval_every=args.steps, seed=args.seed).resolved()
    config = dataclasses.replace(config, layer_options={**config.layer_options, "batch_norm": True})
    result = run_task(config)
    model, task = result.model, result.task
    generator = torch.Generator().manual_seed(args.seed + 1)
    test = task.sample(1000, generator)

    def test_loss(m: torch.nn.Module, training: bool) -> float:
        m.train(training)
        with torch.no_grad():
            return float(task.loss(m(test), test))

    print(f"{args.task} (T={args.seq_len}), {args.steps} steps, test loss:")
    print(f"  eval, running statistics (momentum 0.1):       {test_loss(model, False):.4g}")
    print(f"  train mode, the test batch's own statistics:   {test_loss(copy.deepcopy(model), True):.4g}")
    rebuilt = copy.deepcopy(model)
    rebuilt.rnn.reset_running_stats()
    rebuilt.rnn.batch_norm_momentum = None
    rebuilt.train()
    with torch.no_grad():
        for _ in range(50):
            rebuilt(task.sample(config.batch_size, generator))
    print(f"  eval, statistics re-estimated over 50 batches: {test_loss(rebuilt, False):.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
