"""The cell families and options every core test is parametrised over."""

import functools

import rnnkit

# name → (layer class or factory, constructor keyword arguments)
ALL_CELLS = {
    "rnn-tanh": (rnnkit.RNN, {}),
    "rnn-relu": (rnnkit.RNN, {"nonlinearity": "relu"}),
    "jordan": (rnnkit.Jordan, {"output_size": 3}),
    "lstm": (rnnkit.LSTM, {}),
    "lstm-peephole": (rnnkit.LSTM, {"peephole": True}),
    "lstm-proj": (rnnkit.LSTM, {"proj_size": 2}),
    "lstm-layernorm": (rnnkit.LSTM, {"layer_norm": True}),
    "lstm-all": (rnnkit.LSTM, {"peephole": True, "layer_norm": True, "proj_size": 3,
                               "activation": "relu", "recurrent_activation": "hard_sigmoid"}),
    "gru": (rnnkit.GRU, {}),
    "gru-reset-before": (rnnkit.GRU, {"reset_after": False}),
    "gru-layernorm": (rnnkit.GRU, {"layer_norm": True}),
    "gru-reset-before-layernorm": (rnnkit.GRU, {"reset_after": False, "layer_norm": True}),
    # a cell registered by its cell class alone (docs/adding-a-cell.md): a Recurrent stack of it
    "cifg": (functools.partial(rnnkit.make_layer, "cifg"), {}),
}


def make(name, input_size, hidden_size, **kw):
    cls, opts = ALL_CELLS[name]
    opts = dict(opts)
    if cls is rnnkit.Jordan:
        return cls(input_size, hidden_size, opts.pop("output_size"), **opts, **kw)
    return cls(input_size, hidden_size, **opts, **kw)


#: the engine paths of the classic cells: name → (RNNKIT_NATIVE, layer keyword arguments).
#: "native" is the C++ loop where the cell has one (LSTM with σ/tanh, GRU, Jordan, IndRNN) and
#: the Python loop otherwise; "python" the Python loop with its hand-written BPTT;
#: "autograd" the reference path under autograd.
ENGINE_PATHS = {"native": ("1", {}), "python": ("0", {}), "autograd": ("0", {"backend": "autograd"})}


def use_path(monkeypatch, path: str) -> dict:
    """Select an engine path (see ENGINE_PATHS); returns the layer keyword arguments it needs."""
    setting, kwargs = ENGINE_PATHS[path]
    monkeypatch.setenv("RNNKIT_NATIVE", setting)
    return dict(kwargs)


def graph_nodes(*tensors) -> set[str]:
    """The names of the autograd nodes behind ``tensors`` (e.g. ``"_NativeLSTMBackward"``):
    which engine Function ran."""
    seen, names, todo = set(), set(), [t.grad_fn for t in tensors if t.grad_fn is not None]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names
