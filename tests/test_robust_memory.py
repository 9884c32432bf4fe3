"""Memory of the data pipeline on a large corpus: counting and encoding go chunk by chunk,
so before training starts the process holds the text and the compact ids, not the tens of
bytes per character of whole-corpus temporaries."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.data.text import Vocabulary, _codepoints

ROOT = Path(__file__).resolve().parents[1]


def _reference_vocab_and_ids(text: str) -> tuple[list[str], np.ndarray]:
    """The whole-text computation the chunked one must reproduce."""
    cps, counts = np.unique(_codepoints(text), return_counts=True)
    order = sorted(range(len(cps)), key=lambda i: (-int(counts[i]), int(cps[i])))
    chars = ["\ufffd"] + [chr(int(cps[i])) for i in order if chr(int(cps[i])) != "\ufffd"]
    index = {c: i for i, c in enumerate(chars)}
    return chars, np.array([index[c] for c in text])


@pytest.mark.parametrize("chunk", [1, 7, 1000, 1 << 20])
def test_chunked_vocabulary_and_encoding_equal_the_whole_text_ones(chunk):
    rng = random.Random(chunk)
    alphabet = "abcdefgh \n\t\"é€😀\ufffd" + "".join(chr(c) for c in range(0x400, 0x420))
    text = "".join(rng.choice(alphabet) for _ in range(5000))
    chars, ids = _reference_vocab_and_ids(text)
    vocab = Vocabulary.build(text, chunk_chars=chunk)
    assert vocab.chars == chars
    got, unknown = vocab.encode(text, chunk_chars=chunk)
    assert unknown == 0 and got.dtype == torch.uint8 and got.tolist() == ids.tolist()
    small = Vocabulary.build(text[:50], min_count=2)
    enc, unknown = small.encode(text, chunk_chars=chunk)
    assert unknown == sum(c not in small for c in text) and unknown > 0
    assert enc.tolist() == [small.id(c) for c in text]


_PROBE = """
import json, random, resource, sys, time
n_mb = int(sys.argv[1]); corpus = sys.argv[2]; out = sys.argv[3]
import rnnkit
from rnnkit import CharLMConfig, TrainConfig
rng = random.Random(0)
words = ["def", "class", "return", "self", "x", "y", "if", "else", "for", "in", "range", "print", "é"]
block = "".join(" ".join(rng.choice(words) for _ in range(10)) + "\\n" for _ in range(20000))
with open(corpus, "w", encoding="utf-8") as f:
    for _ in range(n_mb * 2**20 // len(block.encode()) + 1):
        f.write(block)
del block
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0, first = time.time(), []
def callback(event):
    if event["kind"] == "step" and not first:
        first.append(time.time() - t0)
        first.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
result = rnnkit.train(corpus, out, CharLMConfig(hidden_size=16, embed_size=8),
                      TrainConfig(batch_size=8, seq_len=16, max_steps=2, max_time=0, val_fraction=0.0001,
                                  eval_every=0, sample_every=0), callback=callback)
import os
print(json.dumps({"chars": json.load(open(os.path.join(out, "config.json")))["data"]["chars"], "base": base,
                  "peak_at_first_step": first[1], "seconds_to_first_step": first[0], "steps": result.steps}))
"""


def _probe(tmp_path: Path, n_mb: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _PROBE, str(n_mb), str(tmp_path / "big.txt"), str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    (tmp_path / "big.txt").unlink()
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check(report: dict) -> None:
    per_char = (report["peak_at_first_step"] - report["base"]) / report["chars"]
    print(f"{report['chars'] / 1e6:.0f} M chars: peak RSS +{per_char:.2f} bytes/char over the baseline, first step "
          f"after {report['seconds_to_first_step']:.1f} s")
    assert report["steps"] == 2
    # the text (CPython stores this Latin-1 text at 1 byte/char), the ids (1), the training
    # streams (1), and the file's bytes while decoding: measured 2.4-2.8 bytes/char; with
    # whole-corpus temporaries (before the chunked counting and encoding) it was about 29
    assert per_char < 8, per_char


def test_peak_memory_of_a_100_mb_corpus_stays_a_few_bytes_per_char(tmp_path):
    _check(_probe(tmp_path, 100))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("RNNKIT_SLOW"), reason="1 GB corpus: set RNNKIT_SLOW=1")
def test_peak_memory_of_a_1_gb_corpus(tmp_path):
    _check(_probe(tmp_path, 1024))
