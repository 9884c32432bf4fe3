"""``rnnkit sample --num-samples N``: the batched sampler against CharLM.sample, and the CLI."""

import re

import pytest
import torch

from rnnkit.cli import main
from rnnkit.data.text import Vocabulary
from rnnkit.models.charlm import CharLM, CharLMConfig

TEXT = "".join(f"def f{i}(x):\n    return x * {i % 7}\n\n" for i in range(60))


def _model(cell="lstm", num_layers=1):
    torch.manual_seed(3)
    return CharLM(CharLMConfig(cell=cell, hidden_size=12, embed_size=6, num_layers=num_layers),
                  Vocabulary.build(TEXT))


@pytest.mark.parametrize("cell,num_layers", [("lstm", 1), ("gru", 2)])
@pytest.mark.parametrize("options", [dict(temperature=1.0), dict(temperature=0.5, top_k=3),
                                     dict(temperature=2.0, prime="def "), dict(argmax=True, prime="ret")],
                         ids=["plain", "top_k", "prime", "argmax"])
def test_one_sample_is_exactly_charlm_sample(cell, num_layers, options):
    model = _model(cell, num_layers)
    single = "".join(model.sample(80, seed=11, **options))
    assert model.sample_many(1, 80, seed=11, **options) == [single]


def test_many_samples_are_reproducible_and_each_is_a_distinct_draw():
    model = _model()
    texts = model.sample_many(5, 50, seed=4)
    assert len(texts) == 5 and all(len(t) == 50 for t in texts)
    assert set("".join(texts)) <= set(model.vocab.chars)
    assert model.sample_many(5, 50, seed=4) == texts
    assert len(set(texts)) == 5  # a batch is not one sample repeated
    assert model.sample_many(5, 50, seed=5) != texts
    # argmax: every row is the greedy continuation, which CharLM.sample also gives
    greedy = "".join(model.sample(30, argmax=True, prime="def"))
    assert model.sample_many(3, 30, argmax=True, prime="def") == [greedy] * 3


@pytest.mark.parametrize("n", [0, -2, 1.5, True])
def test_bad_num_samples_is_an_error(n):
    with pytest.raises(ValueError, match=f"num_samples must be a positive integer, got {n!r}"):
        _model().sample_many(n, 10)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    corpus = root / "corpus.py"
    corpus.write_text(TEXT)
    run = root / "run"
    assert main(["train", "--data", str(corpus), "--out", str(run), "--max-steps", "3", "--hidden-size", "16",
                 "--embed-size", "8", "--batch-size", "4", "--seq-len", "16", "--max-time", "0",
                 "--val-fraction", "0.1", "--quiet"]) == 0
    return run


def test_cli_num_samples_prints_each_sample_under_its_header(run_dir, capsys):
    def sample(*extra):
        assert main(["sample", str(run_dir), "--length", "40", "--prime", "def ", *extra]) == 0
        return capsys.readouterr().out

    out = sample("--num-samples", "3", "--seed", "7")
    parts = re.split(r"(?:^|\n\n)--- sample (\d+) of 3 ---\n", out)  # ['', '1', text, '2', text, '3', text]
    assert parts[0] == "" and parts[1::2] == ["1", "2", "3"]
    texts = parts[2::2]
    assert texts[-1].endswith("\n")
    texts[-1] = texts[-1][:-1]  # each text ends in a newline, taken by the separator before the next header
    assert all(t.startswith("def ") and len(t) == 4 + 40 for t in texts)
    assert out == sample("--num-samples", "3", "--seed", "7")
    # one sample: today's streamed output, byte for byte
    assert sample("--num-samples", "1", "--seed", "7") == sample("--seed", "7")


def test_cli_rejects_a_bad_num_samples_in_one_line(run_dir, capsys):
    assert main(["sample", str(run_dir), "--num-samples", "0"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--num-samples must be a positive integer, got 0" in err[0]
