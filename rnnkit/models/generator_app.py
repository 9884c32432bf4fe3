"""The generator's application: :func:`train_generator` trains a :class:`Generator` on the
one trainer, into a run directory (model type ``generator``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from ..train.fit import FitConfig, FitResult
from . import _app
from .generator import Generator, GeneratorBatch, GeneratorConfig


def observe_lines(model: Generator, text: str, conditions: Sequence[str]):
    """The hidden states over ``text``, one step per character (an
    :class:`rnnkit.diagnostics.Observation` with (N, 1, S) states): line k is generated
    from condition ``conditions[k]``, teacher-forced from <bos>; each character gets the
    state after reading it, and the line break after a line the state at its end (the
    model reads no line break: each line is a sequence of its own)."""
    from ..diagnostics.observe import Observation, observe

    lines = text.split("\n")
    if len(lines) > len(conditions):
        raise ValueError(f"the text has {len(lines)} lines but {len(conditions)} conditions were given")
    parts: list = []  # per line: (states {key: {name: (n, 1, S)}}, gates {key: {name: (n, 1, H)}})
    was_training = model.training
    model.eval()
    try:
        for k, line in enumerate(lines):
            ids = [model.bos, *model.symbols.encode(line)]
            steps = list(range(1, len(ids))) + ([len(ids) - 1] if k < len(lines) - 1 else [])
            with torch.no_grad(), observe(model) as obs:
                model(torch.tensor(ids).view(-1, 1), torch.tensor(model.conditions.encode([conditions[k]])))
            pick = torch.tensor(steps, dtype=torch.long)
            parts.append(({key: {n: v[pick] for n, v in s.items()} for key, s in obs.states.items()},
                          {key: {n: v[pick] for n, v in g.items()} for key, g in obs.gates.items()}, obs.layers))
    finally:
        model.train(was_training)
    first_states, first_gates, layers = parts[0]
    return Observation(
        states={key: {n: torch.cat([p[0][key][n] for p in parts]) for n in s} for key, s in first_states.items()},
        gates={key: {n: torch.cat([p[1][key][n] for p in parts]) for n in g} for key, g in first_gates.items()},
        layers=dict(layers))


def report_probe(model: Generator, tensors: dict, source: str):
    """``rnnkit report`` measures a generator on the sequences stored with its run: the
    gradient flow of its training loss, and (a character model) the sequences coloured by
    hidden units, one line each, generated from their conditions."""
    from ..diagnostics.report import Probe

    batch = GeneratorBatch(tensors["inputs"], tensors["targets"], tensors["lengths"], tensors["conditions"])
    texts = ["".join(model.symbols.decode(batch.inputs[1 : int(n), b].tolist()))
             for b, n in enumerate(batch.lengths)]
    conditions = model.conditions.decode(batch.conditions.tolist())
    probe = Probe(model, loss=lambda m: m.loss(batch),
                  what=f"the next-symbol cross-entropy (every step) of the first {len(texts)} {source} sequences, "
                       f"stored with the run")
    if not any("\n" in t for t in texts):  # one line per sequence
        probe.text, probe.observe_text = "\n".join(texts), lambda m, text: observe_lines(m, text, conditions)
    return probe


_app.register("generator", Generator, GeneratorConfig, report_probe)



def train_generator(
    texts: Sequence[str],
    conditions: Sequence[str],
    valid: tuple[Sequence[str], Sequence[str]] | None = None,
    config: GeneratorConfig | None = None,
    fit_config: FitConfig | None = None,
    log: Callable[[dict], None] | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> tuple[Generator, FitResult]:
    """Build a generator from (text, condition) pairs and fit it; with ``valid``, the
    weights with the lowest validation bits per symbol are kept. ``out``, ``resume``: the
    run directory (see :func:`rnnkit.models._app.fit_run`)."""
    return _app.fit_run(
        "generator", lambda: Generator.from_data(texts, conditions, config), list(zip(texts, conditions)),
        lambda model, ps: model.batch([p[0] for p in ps], [p[1] for p in ps]), lambda m, b: m.loss(b),
        (lambda m: m.bits_per_symbol(*valid)) if valid else None, fit_config,
        log=log, out=out, resume=resume, overwrite=overwrite, callback=callback,
        probe=("validation", list(zip(*valid))) if valid and len(valid[0]) else ("training",
                                                                               list(zip(texts, conditions))))
