"""One self-contained HTML page about a trained model: training curves, gradient flow,
gate saturation, the text coloured by any hidden unit (picked live in the page), the units
that track the built-in signals, and attention maps. No network access: images are PNG
data URIs, script and style are inline, activations are embedded as base64 bytes.

What the page measures a model on comes from its :class:`Probe`: a batch and its loss
(gradient flow through time, gate saturation), a text (the text sections of character
models) and attention examples. ``rnnkit report`` gets it from the hook each model type
registers with its run directories (``rundir.register_model_type(..., probe=)``)."""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..layers import Recurrent
from .gates import SIGMOID_GATES, GateSaturation, gate_saturation, observed_gate_saturation
from .gradflow import gradient_flow, jacobian_spectral_norms
from .observe import Observation, observe
from .plots import (
    plot_attention,
    plot_gate_saturation,
    plot_gradient_norms,
    plot_metrics,
    png_bytes,
)
from .units import SIGNALS, UnitCorrelation, correlated_units, encode_text, text_activations

log = logging.getLogger(__name__)


@dataclass
class ReportConfig:
    """What the report computes; defaults keep a CPU run of a small model to seconds."""

    title: str = "rnnkit report"
    #: characters of the text shown and analysed (the text is cut to this length)
    max_chars: int = 1500
    #: length and number of the windows of text the gradient flow is measured on
    grad_window: int = 100
    grad_batch: int = 8
    #: sequences the Jacobian spectral norms are averaged over (one SVD per step each)
    jacobian_sequences: int = 2
    #: largest state (Σ state sizes of a layer) whose step Jacobian is computed: its cost
    #: grows with the square of the state (an mLSTM's d×d memories, S6's H·N states)
    jacobian_max_state: int = 1024
    #: largest state entry shown unit by unit over the text
    max_units_shown: int = 4096
    #: rows per built-in signal in the table of correlated units
    top_k: int = 5


@dataclass
class AttentionExample:
    """One seq2seq example: weights (T_out, T_in) and the tokens along both axes."""

    weights: Tensor
    source: Sequence[str]
    target: Sequence[str]
    title: str = ""


@dataclass
class Probe:
    """What the report measures a trained model on (given by its model type's hook).

    - ``loss(model)``: runs the forward pass on a fixed batch and returns a scalar loss; the
      gradient flow through time (‖∂L/∂h_t‖ per step, batch mean over the steps inside each
      sequence's length), the step Jacobians' spectral norms and the gate saturation are
      measured on every rnnkit layer it runs over a whole sequence at once (a layer called
      one step at a time, like an attention decoder's, has no time axis of its own there).
      None: a character model measured on windows of ``text`` (the char LM's interface).
    - ``what``: one line under the figure: the batch and the loss.
    - ``text``: the characters coloured by hidden units (character models), observed by
      ``observe_text(model, text)`` (an :class:`Observation` with one step per character;
      default :func:`~rnnkit.diagnostics.text_activations`).
    - ``attention``: attention maps to draw.
    - ``missing``: one line saying why there is no gradient flow (e.g. a run from before the
      probe sample was stored); the rest of the report is made as usual.
    """

    model: nn.Module | None = None
    loss: Callable[[nn.Module], Tensor] | None = None
    what: str = ""
    text: str | None = None
    observe_text: Callable[[nn.Module, str], Observation] | None = None
    attention: list[AttentionExample] = field(default_factory=list)
    missing: str | None = None


@dataclass
class _Section:
    anchor: str
    title: str
    body: str


@dataclass
class ReportData:
    """Everything the page shows, computed by :func:`analyse` (useful on its own in notebooks)."""

    metrics: list[dict] = field(default_factory=list)
    text: str = ""
    grad_norms: dict[str, Tensor] = field(default_factory=dict)
    jacobian_norms: dict[str, Tensor] = field(default_factory=dict)
    observation: Observation | None = None
    correlations: dict[str, list[UnitCorrelation]] = field(default_factory=dict)
    attention: list[AttentionExample] = field(default_factory=list)
    #: gate saturation per layer key, over the text (text models) or the probe's batch
    saturation: dict[str, GateSaturation] = field(default_factory=dict)
    #: the line under the gradient-flow figure (what it was measured on), or why there is none
    gradflow_note: str = ""
    gradflow_missing: str | None = None


def analyse(model: nn.Module | None, metrics: Sequence[Mapping] = (), text: str | None = None,
            attention: Sequence[AttentionExample] = (), config: ReportConfig | None = None, *,
            probe: Probe | None = None) -> ReportData:
    """Compute the report's measurements.

    Without a ``probe`` (or with one whose ``loss`` is None), ``model`` has the char-LM
    interface (``.vocab.encode``, ``.embed``, ``.rnn``, ``forward(idx (T, B)) -> (logits
    (T, B, V), state)``); with a model and a text, the gradient flow is measured on
    ``grad_batch`` windows of the text with the cross-entropy of the prediction after the
    window's last character as the loss. With a ``probe`` the model, text and attention
    examples not given come from it and the gradient flow is measured on its batch.
    """
    cfg = config or ReportConfig()
    data = ReportData(metrics=[dict(m) for m in metrics], attention=list(attention))
    observe_text = text_activations
    if probe is not None:
        model = probe.model if model is None else model
        text = probe.text if text is None else text
        data.attention.extend(probe.attention)
        observe_text = probe.observe_text or text_activations
        data.gradflow_missing = probe.missing
        if model is not None and probe.loss is not None and probe.missing is None:
            _probe_gradient_flow(model, probe, cfg, data)
    if model is None or not text:
        return data
    text = text[: cfg.max_chars]
    data.text = text
    if probe is None or (probe.loss is None and probe.missing is None):
        _window_gradient_flow(model, text, cfg, data)
    data.observation = observe_text(model, text)
    data.saturation = observed_gate_saturation(data.observation)
    for name, signal in SIGNALS.items():
        data.correlations[name] = correlated_units(data.observation, signal(text), top_k=cfg.top_k)
    return data


def _window_gradient_flow(model: nn.Module, text: str, cfg: ReportConfig, data: ReportData) -> None:
    """The char LM's gradient flow: ``grad_batch`` windows of the text, the loss at the last."""
    idx = encode_text(model, text)
    if len(idx) < 3:
        raise ValueError(f"text must have at least 3 characters for the analysis, got {len(idx)}")
    was_training = model.training
    model.eval()
    try:
        T = min(cfg.grad_window, len(idx) - 1)
        starts = torch.linspace(0, len(idx) - 1 - T, cfg.grad_batch).round().long().unique()
        windows = torch.stack([idx[s : s + T] for s in starts], 1)  # (T, B)
        targets = idx[starts + T]  # (B,)

        def loss_fn() -> Tensor:
            logits, _ = model(windows)
            return nn.functional.cross_entropy(logits[-1], targets)

        record = gradient_flow(model, loss_fn)
        data.grad_norms = {k: v.mean(1) for k, v in record.norms.items()}
        rnn = getattr(model, "rnn", None)
        if isinstance(rnn, Recurrent) and hasattr(model, "embed"):
            with torch.no_grad():
                x = model.embed(windows[:, : cfg.jacobian_sequences])  # (T, b, E)
            state = sum(rnn.cell.state_sizes())
            if state > cfg.jacobian_max_state:
                log.warning("step Jacobians left out: the state has %d numbers per layer (more than %d)", state,
                            cfg.jacobian_max_state)
            for layer in range(rnn.num_layers if state <= cfg.jacobian_max_state else 0):
                for d in range(rnn.num_directions):
                    key = f"rnn.l{layer}" + ("_reverse" if d else "")
                    data.jacobian_norms[key] = jacobian_spectral_norms(rnn, x, layer, d).mean(1)
    finally:
        model.train(was_training)
    data.gradflow_note = (f"the cross-entropy of the prediction after the last character of {len(starts)} "
                          f"{T}-character windows of the text")


def _select(state, index: Tensor):
    """The sequences ``index`` of a layer's ``hx`` (a (L·D, B, S) tensor, a tuple of them, or None)."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state[:, index]
    return tuple(s[:, index] for s in state)


def _probe_gradient_flow(model: nn.Module, probe: Probe, cfg: ReportConfig, data: ReportData) -> None:
    """Gradient flow, step Jacobians and gate saturation of every rnnkit layer that
    ``probe.loss`` runs once over whole sequences (time-major, at least 2 steps); steps past
    a sequence's length (its ``lengths``) are left out of the means."""
    names = {m: name or type(m).__name__.lower() for name, m in model.named_modules() if isinstance(m, Recurrent)}
    calls: dict[str, list[tuple]] = {}

    def remember(module, args, kwargs) -> None:
        x = args[0] if args else kwargs.get("input")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        lengths = args[2] if len(args) > 2 else kwargs.get("lengths")
        calls.setdefault(names[module], []).append((x, hx, lengths))

    was_training = model.training
    model.eval()
    handles = [m.register_forward_pre_hook(remember, with_kwargs=True) for m in names]
    try:
        with torch.no_grad(), observe(model) as obs:
            probe.loss(model)
    finally:
        for h in handles:
            h.remove()
    try:
        record = gradient_flow(model, lambda: probe.loss(model))
        layers = {}  # name → (layer, x (T, B, I), hx, mask (T, B) or None)
        for m, name in names.items():
            seen = calls.get(name, [])
            if len(seen) != 1 or m.batch_first or not isinstance(seen[0][0], Tensor) or seen[0][0].dim() != 3:
                continue
            x, hx, lengths = seen[0]
            if x.shape[0] < 2:
                continue
            mask = None
            if lengths is not None:
                lengths = torch.as_tensor(lengths).to(x.device)
                mask = torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B)
            layers[name] = (m, x, hx, lengths, mask)
        for key, norms in record.norms.items():  # norms (T, B)
            name = key.rsplit(".", 1)[0]
            if name not in layers:
                continue
            mask = layers[name][4]
            if mask is None or mask.shape != norms.shape:
                data.grad_norms[key] = norms.mean(1)
            else:
                w = mask.to(norms.dtype)
                data.grad_norms[key] = (norms * w).sum(1) / w.sum(1).clamp_min(1)
        for name, (m, x, hx, lengths, _) in layers.items():
            state = sum(m.cell.state_sizes())
            if state > cfg.jacobian_max_state:
                log.warning("step Jacobians of %s left out: the state has %d numbers per layer (more than %d)",
                            name, state, cfg.jacobian_max_state)
                continue
            # the longest sequences, whole: their steps are the real ones in both directions
            if lengths is None:
                index, T = torch.arange(min(cfg.jacobian_sequences, x.shape[1])), x.shape[0]
            else:
                T = int(lengths.max())
                index = (lengths == T).nonzero().flatten()[: cfg.jacobian_sequences].cpu()
            if T < 2:
                continue
            xs = x[:T, index.to(x.device)].detach()
            for layer in range(m.num_layers):
                for d in range(m.num_directions):
                    key = f"{name}.l{layer}" + ("_reverse" if d else "")
                    data.jacobian_norms[key] = jacobian_spectral_norms(m, xs, layer, d, _select(hx, index)).mean(1)
    finally:
        model.train(was_training)
    for key, gates in obs.gates.items():
        name = key.rsplit(".", 1)[0]
        sig = {n: v for n, v in gates.items() if n in SIGMOID_GATES}
        if name in layers and sig:
            mask = layers[name][4]
            first = next(iter(sig.values()))
            data.saturation[key] = gate_saturation(sig, mask if mask is not None and mask.shape == first.shape[:2]
                                                   else None)
    if not data.grad_norms:
        data.gradflow_missing = ("no rnnkit layer of the model runs over a whole sequence at once in its forward "
                                 "pass, so there is no gradient flow through time to draw")
    data.gradflow_note = probe.what


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}nav{padding:6px 28px;background:#eceff1;font-size:13px}
nav a{margin-right:14px;color:#37474f}main{padding:6px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:18px;margin:4px 0 8px}p.note{color:#555;font-size:13px;margin:4px 0 10px}
img.plot{max-width:100%;height:auto;display:block}
#controls{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin-bottom:8px;font-size:14px}
#controls input[type=range]{width:260px}#unit-num{width:70px}
#text{font:13px/1.5 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;white-space:pre-wrap;
border:1px solid #ddd;padding:8px;max-height:560px;overflow:auto;background:#fff}
#text span{border-radius:1px}#hover{font:12px ui-monospace,monospace;color:#444;min-height:1.2em}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
tr.pick{cursor:pointer}tr.pick:hover{background:#e3f2fd}td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend{display:inline-block;width:120px;height:10px;background:linear-gradient(90deg,#285ad8,#fff,#dc2828);
vertical-align:middle;border:1px solid #ccc}pre.cfg{font-size:12px;background:#f5f5f5;padding:8px;overflow:auto}
"""

_JS = """
(function(){
  const D = JSON.parse(document.getElementById('act-data').textContent);
  const box = document.getElementById('text');
  const sel = document.getElementById('layer');
  const rng = document.getElementById('unit');
  const num = document.getElementById('unit-num');
  const hover = document.getElementById('hover');
  const blocks = D.blocks.map(function(b){
    const raw = atob(b.b64); const q = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) q[i] = raw.charCodeAt(i);
    return {name: b.name, units: b.units, scale: b.scale, q: q};
  });
  const chars = Array.from(D.text);  // code points, as Python counts characters
  const N = chars.length; const spans = new Array(N); const frag = document.createDocumentFragment();
  for (let i = 0; i < N; i++) {
    const s = document.createElement('span'); s.textContent = chars[i]; s.dataset.i = i;
    spans[i] = s; frag.appendChild(s);
  }
  box.appendChild(frag);
  blocks.forEach(function(b, k){
    const o = document.createElement('option'); o.value = k; o.textContent = b.name; sel.appendChild(o);
  });
  function norm(b, i, u){ return (b.q[i * b.units + u] - 127) / 127; }
  function paint(){
    const b = blocks[+sel.value]; let u = Math.max(0, Math.min(b.units - 1, +rng.value|0));
    rng.max = b.units - 1; rng.value = u; num.max = b.units - 1; num.value = u;
    for (let i = 0; i < N; i++) {
      const v = norm(b, i, u); const a = Math.min(1, Math.abs(v)).toFixed(3);
      spans[i].style.backgroundColor = v >= 0 ? 'rgba(220,40,40,' + a + ')' : 'rgba(40,90,216,' + a + ')';
    }
    document.getElementById('unit-label').textContent = b.name + ', unit ' + u +
      ' (colour scale ±' + b.scale[u].toPrecision(3) + ')';
  }
  function pick(k, u){ sel.value = k; rng.max = blocks[k].units - 1; rng.value = u; paint(); }
  sel.addEventListener('change', paint);
  rng.addEventListener('input', paint);
  num.addEventListener('change', function(){ rng.value = num.value; paint(); });
  box.addEventListener('mouseover', function(e){
    const i = e.target.dataset && e.target.dataset.i; if (i === undefined) return;
    const b = blocks[+sel.value]; const u = +rng.value;
    const c = JSON.stringify(chars[i]);
    hover.textContent = 'char ' + i + ' ' + c + ': ' + (norm(b, +i, u) * b.scale[u]).toPrecision(3);
  });
  document.querySelectorAll('tr.pick').forEach(function(tr){
    tr.addEventListener('click', function(){
      pick(+tr.dataset.block, +tr.dataset.unit);
      box.scrollIntoView({behavior: 'smooth', block: 'nearest'});
    });
  });
  pick(+D.start.block, +D.start.unit);
})();
"""


def _finite_list(v: Tensor) -> list[float | None]:
    """The values as JSON numbers (a non-finite value, which JSON cannot hold, as null)."""
    return [x if math.isfinite(x) else None for x in v.detach().double().cpu().tolist()]


def _img(fig, alt: str) -> str:
    b64 = base64.b64encode(png_bytes(fig)).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _activation_blocks(obs: Observation, max_units: int) -> list[dict]:
    """Per (layer, state entry) of at most ``max_units`` units: values quantised per unit to
    bytes 0..254 (127 = 0) with the unit's scale max|v|, base64 of the (N, S) row-major array."""
    blocks = []
    for key, states in obs.states.items():
        for sname, s in states.items():
            if s.shape[-1] > max_units:
                log.warning("%s %s left out of the units over the text: %d units (more than %d)", key, sname,
                            s.shape[-1], max_units)
                continue
            v = s[:, 0].double()  # (N, S)
            scale = v.abs().amax(0).clamp_min(1e-12)  # (S,)
            q = (v / scale * 127).round().clamp(-127, 127).to(torch.int16) + 127
            blocks.append({
                "name": f"{key} {sname}",
                "key": key,
                "state": sname,
                "units": int(v.shape[1]),
                "scale": [float(x) for x in scale],
                "b64": base64.b64encode(q.to(torch.uint8).contiguous().numpy().tobytes()).decode("ascii"),
            })
    return blocks


#: characters that JSON leaves alone but an HTML parser or a JavaScript parser does not, and
#: their JSON escapes: with no "<" in the script element, no "</script>" can end it early and
#: no "<!--" can switch the parser to the escaped script-data state, where a "<script>" in the
#: text would make it swallow the page's own script; U+2028/U+2029 end lines in older JavaScript
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_SURROGATES = re.compile("[\ud800-\udfff]")


def _json_script(obj) -> str:
    """``obj`` as JSON to put inside ``<script type="application/json">``: the same JSON value,
    with nothing the HTML parser could read as markup."""
    text = json.dumps(obj, separators=(",", ":"))
    for ch, escape in _SCRIPT_ESCAPES.items():
        text = text.replace(ch, escape)
    return text


def _displayable(text: str) -> str:
    """``text`` with each surrogate code point (a lone half of a UTF-16 pair, which a Python
    string may hold but no UTF-8 file can) replaced by U+FFFD. Two such halves in a row would
    become one character in the page's JavaScript and shift every colour after them; one
    replacement character per code point keeps the page's characters those of the analysis."""
    return _SURROGATES.sub("\ufffd", text)


def render_html(data: ReportData, config: ReportConfig | None = None, info: Mapping | None = None) -> str:
    """The page for the measurements in ``data``; ``info`` (e.g. the run's config.json) is
    shown in a collapsible block."""
    cfg = config or ReportConfig()
    sections: list[_Section] = []
    if data.metrics:
        try:
            sections.append(_Section("curves", "Training curves", _img(plot_metrics(data.metrics), "training curves")
                                     + '<p class="note">Bits per character against the training step, from '
                                       "metrics.jsonl: the train curve is the running training loss, the "
                                       "validation curve the held-out text; a widening gap means overfitting.</p>"))
        except ValueError as e:
            log.warning("training curves left out: %s", e)
    if data.grad_norms:
        fig = plot_gradient_norms(data.grad_norms, data.jacobian_norms or None, title="‖∂L/∂h_t‖")
        numbers = {"grad_norms": {k: _finite_list(v) for k, v in data.grad_norms.items()},
                   "jacobian_norms": {k: _finite_list(v) for k, v in data.jacobian_norms.items()},
                   "measured_on": data.gradflow_note}
        sections.append(_Section("gradflow", "Gradient flow through time", _img(fig, "gradient flow") +
                                 f'<p class="note">Measured on {html.escape(data.gradflow_note)}. Left: the norm '
                                 "of the gradient of that loss with respect to the hidden state at each step "
                                 "(mean over the sequences that reach the step); a steep fall towards the early "
                                 "steps means the model cannot learn from far back. Right: the largest singular "
                                 "value of the step-to-step Jacobian; below the dashed line 1 every step shrinks "
                                 "the gradient. The numbers are in the page (gradflow-data).</p>"
                                 f'<script type="application/json" id="gradflow-data">{_json_script(numbers)}'
                                 "</script>"))
    elif data.gradflow_missing:
        sections.append(_Section("gradflow", "Gradient flow through time",
                                 f'<p class="note">{html.escape(data.gradflow_missing)}</p>'))
    obs = data.observation
    if data.saturation:
        over = "over the text" if obs is not None else f"over {html.escape(data.gradflow_note)}"
        sections.append(_Section("gates", "Gate saturation",
                                 _img(plot_gate_saturation(data.saturation), "gate saturation") +
                                 '<p class="note">Each point is one gate unit: how often it is nearly closed '
                                 f"(&lt; 0.1, x axis) and nearly open (&gt; 0.9, y axis) {over} "
                                 "(Karpathy, Johnson &amp; Fei-Fei 2015). Points near the right edge are "
                                 "units that almost always let information through, e.g. forget gates that "
                                 "keep long-term memory.</p>"))
    if obs is not None:
        blocks = _activation_blocks(obs, cfg.max_units_shown)
        index = {(b["key"], b["state"]): k for k, b in enumerate(blocks)}
        start = {"block": 0, "unit": 0}
        rows = []
        for sig, found in data.correlations.items():
            for rank, c in enumerate(found):
                k = index.get((c.layer, c.state))
                if k is None:  # a state entry too large to show
                    continue
                if not rows:
                    start = {"block": k, "unit": c.unit}
                rows.append(f'<tr class="pick" data-block="{k}" data-unit="{c.unit}"><td>{html.escape(sig)}</td>'
                            f'<td class="num">{rank + 1}</td><td>{html.escape(c.layer)} {html.escape(c.state)}'
                            f'</td><td class="num">{c.unit}</td><td class="num">{c.r:+.3f}</td></tr>')
        payload = {"text": _displayable(data.text), "blocks": blocks, "start": start}
        body = ('<div id="controls"><label>layer / state <select id="layer"></select></label>'
                '<label>unit <input type="range" id="unit" min="0" max="0" value="0" step="1"></label>'
                '<input type="number" id="unit-num" min="0" value="0">'
                '<span id="unit-label"></span><span><span class="legend"></span> negative · positive</span>'
                '</div><div id="hover"></div><div id="text"></div>'
                f'<script type="application/json" id="act-data">{_json_script(payload)}</script>'
                '<p class="note">Each character is coloured by the chosen unit\'s value after reading it '
                "(blue negative, red positive, scaled by the unit's largest |value| over the text). "
                "Pick a layer and unit above, or click a row of the table below.</p>")
        sections.append(_Section("units", "Hidden units over the text", body))
        if rows:
            sections.append(_Section("signals", "Units that track a signal",
                                     '<p class="note">For each built-in per-character signal, the units whose '
                                     "activation has the largest Pearson correlation |r| with it. Click a row "
                                     "to colour the text by that unit.</p><table><tr><th>signal</th><th>rank</th>"
                                     "<th>layer / state</th><th>unit</th><th>r</th></tr>"
                                     + "".join(rows) + "</table>"))
    if data.attention:
        imgs = "".join(_img(plot_attention(a.weights, a.source, a.target, a.title or f"example {k + 1}"),
                            f"attention map {k + 1}") for k, a in enumerate(data.attention))
        sections.append(_Section("attention", "Attention", imgs +
                                 '<p class="note">Row j is the attention distribution over the source tokens '
                                 "when emitting target token j; a clean diagonal means the decoder reads the "
                                 "source in order.</p>"))
    if info:
        sections.append(_Section("config", "Run configuration", '<pre class="cfg">'
                                 + html.escape(json.dumps(info, indent=2, default=str)) + "</pre>"))
    if not sections:
        raise ValueError("nothing to report: give metrics, a model with a text, or attention examples")
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    main = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{s.body}</section>' for s in sections)
    script = f"<script>{_JS}</script>" if obs is not None else ""
    from .._version import __version__

    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(cfg.title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{_CSS}</style></head><body><header><h1>{html.escape(cfg.title)}</h1>"
            f"<p>made by rnnkit {__version__}</p></header><nav>{nav}</nav><main>{main}</main>{script}"
            "</body></html>\n")


def build_report(model: nn.Module | None, metrics: Sequence[Mapping] = (), text: str | None = None, *,
                 attention: Sequence[AttentionExample] = (), config: ReportConfig | None = None,
                 info: Mapping | None = None, probe: Probe | None = None) -> str:
    """:func:`analyse` then :func:`render_html`: the HTML page as a string."""
    data = analyse(model, metrics, text, attention, config, probe=probe)
    return render_html(data, config, info)


def write_report(path: str | Path, model: nn.Module | None, metrics: Sequence[Mapping] = (),
                 text: str | None = None, **kwargs) -> Path:
    """Write :func:`build_report` to ``path`` (atomically: a temporary file, fsync, rename)."""
    from ..checkpoint import atomic_write

    page = build_report(model, metrics, text, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, _displayable(page).encode("utf-8"))  # a surrogate could come with a run's name
    return path


def read_metrics(path: str | Path) -> list[dict]:
    """Read a metrics.jsonl file: one JSON object per line (blank lines skipped)."""
    from ..errors import DataError

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"metrics file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not a JSON object: {e.msg}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append(obj)
    return out
