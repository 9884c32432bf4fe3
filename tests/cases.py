"""The cell families and options every core test is parametrised over."""

import rnnkit

# name → (layer class, constructor keyword arguments)
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
}


def make(name, input_size, hidden_size, **kw):
    cls, opts = ALL_CELLS[name]
    opts = dict(opts)
    if cls is rnnkit.Jordan:
        return cls(input_size, hidden_size, opts.pop("output_size"), **opts, **kw)
    return cls(input_size, hidden_size, **opts, **kw)
