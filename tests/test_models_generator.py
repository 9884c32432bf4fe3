"""The generator: stepwise sampling runs the same network as the teacher-forced
forward, the condition steers the output, the loss falls below the unigram baseline."""

import random

import pytest
import torch

from rnnkit.models.generator import Generator, GeneratorConfig, unigram_bits
from rnnkit.models.generator_app import train_generator
from rnnkit.train.fit import FitConfig


@pytest.mark.parametrize("mode", ["init", "concat", "both"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "jordan"])
def test_one_step_at_a_time_equals_the_whole_sequence(mode, cell):
    model = Generator.from_data(["abc", "cab"], ["x", "y"], GeneratorConfig(cell=cell, hidden_size=6, num_layers=2,
                                                                            condition_mode=mode)).eval()
    b = model.batch(["abcab"], ["y"])
    full, _ = model(b.inputs, b.conditions)  # (T, 1, V)
    state, steps = None, []
    for t in range(b.inputs.shape[0]):
        logits, state = model(b.inputs[t : t + 1], b.conditions, state=state)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps), full, atol=1e-5, rtol=1e-5)


def _patterns(n, seed):
    """Condition 'even' → runs of 'ab', 'odd' → runs of 'xyz', of random length."""
    r = random.Random(seed)
    texts, conds = [], []
    for _ in range(n):
        c = r.choice(["even", "odd"])
        unit = "ab" if c == "even" else "xyz"
        texts.append(unit * r.randint(1, 4))
        conds.append(c)
    return texts, conds


@pytest.mark.parametrize("mode", ["init", "concat"])
def test_condition_steers_the_samples(mode):
    x, c = _patterns(300, 0)
    vx, vc = _patterns(60, 1)
    model, _ = train_generator(x, c, None, GeneratorConfig(hidden_size=24, condition_mode=mode, dropout=0.0),
                               FitConfig(max_steps=150, lr=1e-2, eval_every=50))
    assert model.bits_per_symbol(vx, vc) < 0.5 * unigram_bits(x, vx)
    g = torch.Generator().manual_seed(0)
    even = model.sample("even", 20, temperature=0.5, generator=g)
    odd = model.sample("odd", 20, temperature=0.5, generator=g)
    assert sum(s != "" and s == "ab" * (len(s) // 2) for s in even) >= 18
    assert sum(s != "" and s == "xyz" * (len(s) // 3) for s in odd) >= 18


def test_sampling_is_reproducible_and_checks_arguments(tmp_path):
    model = Generator.from_data(["abc"], ["x"], GeneratorConfig(hidden_size=4))
    a = model.sample("x", 3, max_length=7, generator=torch.Generator().manual_seed(1))
    b = model.sample("x", 3, max_length=7, generator=torch.Generator().manual_seed(1))
    assert a == b and all(len(s) <= 7 and set(s) <= set("abc") for s in a)
    model.save(tmp_path / "g")
    loaded = Generator.load(tmp_path / "g")
    assert loaded.sample("x", 3, max_length=7, generator=torch.Generator().manual_seed(1)) == a
    with pytest.raises(ValueError, match="unknown condition 'y'"):
        model.sample("y")
    with pytest.raises(ValueError, match="temperature must be positive"):
        model.sample("x", temperature=0)


def test_unigram_baseline_hand_computed():
    # train symbols: a a b <eos>; add-one over {a, b, <eos>}: p(a) = 3/7, p(<eos>) = 2/7
    import math
    assert unigram_bits(["aab"], ["a"]) == pytest.approx(-(math.log2(3 / 7) + math.log2(2 / 7)) / 2)
