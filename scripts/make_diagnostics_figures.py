"""Make the figures of docs/diagnostics.md with rnnkit's own code.

1. ``rnnkit gradflow`` twice: vanishing vs stable gradients of fresh cells, and an exploding
   Elman RNN with the effect of clipping.
2. A small two-layer LSTM character model trained for a minute or two on standard-library
   source code, its HTML report, and a screenshot of that page taken by headless Chromium.

Usage: python scripts/make_diagnostics_figures.py [--out docs] [--seconds 120]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import rnnkit
from rnnkit import diagnostics as dg
from rnnkit.cli import main as cli


class Vocab:
    """Characters of the corpus, by index."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: k for k, c in enumerate(self.chars)}

    def encode(self, s: str) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in s], dtype=torch.long)

    def decode(self, idx) -> str:
        return "".join(self.chars[int(k)] for k in idx)


class CharLM(nn.Module):
    """Embedding → rnnkit LSTM → linear head: the interface the report reads."""

    def __init__(self, vocab: Vocab, hidden: int, layers: int):
        super().__init__()
        self.vocab = vocab
        self.embed = nn.Embedding(len(vocab.chars), 32)
        self.rnn = rnnkit.LSTM(32, hidden, num_layers=layers, forget_bias=1.0)
        self.head = nn.Linear(hidden, len(vocab.chars))

    def forward(self, idx, state=None):
        out, state = self.rnn(self.embed(idx), state)  # (T, B, H)
        return self.head(out), state


def _corpus() -> tuple[str, str]:
    """Training text: a dozen standard-library modules; report text: textwrap.py (not trained on)."""
    import sysconfig

    lib = Path(sysconfig.get_paths()["stdlib"])
    train = ["argparse.py", "dataclasses.py", "functools.py", "fractions.py", "shlex.py", "csv.py",
             "json/decoder.py", "json/encoder.py", "string.py"]
    text = "".join((lib / m).read_text(encoding="utf-8") for m in train)
    return text, (lib / "textwrap.py").read_text(encoding="utf-8")


def train_char_model(seconds: float, seq_len: int = 64, batch: int = 32) -> tuple[CharLM, list[dict], str]:
    torch.manual_seed(0)
    train_text, test_text = _corpus()
    vocab = Vocab(train_text + test_text)
    model = CharLM(vocab, hidden=64, layers=2)
    data = vocab.encode(train_text)
    val = vocab.encode(test_text[:4000])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    metrics, start, step = [], time.time(), 0
    while time.time() - start < seconds:
        offs = torch.randint(0, len(data) - seq_len - 1, (batch,))
        idx = torch.stack([data[o : o + seq_len + 1] for o in offs], 1)  # (T+1, B)
        logits, _ = model(idx[:-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        entry = {"step": step, "time": round(time.time() - start, 2), "train_bpc": loss.item() / math.log(2),
                 "lr": 3e-3}
        if step % 50 == 0:
            with torch.no_grad():
                vl, _ = model(val[:-1].view(-1, 1))
                entry["val_bpc"] = float(nn.functional.cross_entropy(vl[:, 0], val[1:])) / math.log(2)
        metrics.append(entry)
        step += 1
    return model, metrics, test_text


def screenshot(html: Path, png: Path, width: int = 1250, height: int = 2900, zoom: float = 0.72) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        f"--force-device-scale-factor={zoom}",
                        f"--screenshot={png.resolve()}", html.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs", help="folder for the figures (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=120.0, help="training time of the char model")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli(["gradflow", "--cell", "rnn,lstm,gru", "--forget-bias", "5", "--out", str(out / "gradflow.png")])
    cli(["gradflow", "--cell", "rnn", "--init", "orthogonal", "--scale", "2", "--clip", "1",
         "--out", str(out / "gradflow_exploding.png")])
    model, metrics, text = train_char_model(args.seconds)
    print(f"trained {len(metrics)} steps, last val bpc {[m['val_bpc'] for m in metrics if 'val_bpc' in m][-1]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        info = {"model_type": "charlm", "model": {"cell": "lstm", "hidden_size": 64, "num_layers": 2},
                "train": {"steps": len(metrics), "corpus": "nine standard-library modules"}}
        dg.write_report(html, model, metrics, text, config=dg.ReportConfig(title="rnnkit report: tiny LSTM on "
                        "stdlib source", max_chars=1200), info=info)
        screenshot(html, out / "diagnostics_report.png")
    print(json.dumps({p.name: p.stat().st_size for p in sorted(out.glob("*.png"))}))


if __name__ == "__main__":
    main()
