"""PyTorch's own ModuleInfo cases for nn.RNN, nn.GRU and nn.LSTM, run against rnnkit.

``torch.testing._internal.common_modules.module_db`` (shipped in the torch wheel) lists, for
every torch.nn module, the constructor and forward inputs PyTorch tests it with
(``module_inputs_func``) and the inputs it must reject (``module_error_inputs_func``). For
every entry of nn.RNN/GRU/LSTM this harness builds the torch.nn module and the rnnkit one
from the same constructor input, loads the same state_dict, and checks on one engine path:

- forward: every forward input, float32 and float64, with and without requires_grad, in
  training and eval mode, packed inputs included: the same outputs and the same gradients of
  the inputs and of every parameter, and the engine path that was asked for ran;
- pickle: the rnnkit module after pickle.dumps/loads gives the same outputs, bit for bit;
- gradgrad: for the float64 inputs with requires_grad, the same gradient penalty and
  Hessian-vector product as torch.nn (whose CPU double backward PyTorch's test_gradgrad
  checks), and float64 gradgradcheck of the rnnkit module on one case per module, input kind
  and direction;
- errors: every error input raises the exception type torch.nn raises (and PyTorch's test
  expects), with a message that matches PyTorch's expected pattern.

Run as ``python -m tests.moduleinfo_harness PATH...`` (native, python, autograd); prints one
JSON object with the counts and the failures per path. Run in its own process because importing
``common_modules`` changes global state (``torch.backends.disable_global_flags``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from collections import defaultdict

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import rnnkit

from .cases import ENGINE_PATHS, graph_nodes

RNNKIT = {nn.RNN: rnnkit.RNN, nn.GRU: rnnkit.GRU, nn.LSTM: rnnkit.LSTM}
NATIVE = {nn.LSTM: "_NativeLSTMBackward", nn.GRU: "_NativeGRUBackward"}
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def _tensors(value) -> list[torch.Tensor]:
    """Every tensor in a forward input or output (a PackedSequence by its data)."""
    if isinstance(value, PackedSequence):
        return [value.data]
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _check_packed_layout(got, want) -> None:
    if isinstance(want, PackedSequence):
        assert isinstance(got, PackedSequence), f"expected a PackedSequence, got {type(got).__name__}"
        assert torch.equal(got.batch_sizes, want.batch_sizes)
        for a, b in ((got.sorted_indices, want.sorted_indices), (got.unsorted_indices, want.unsorted_indices)):
            assert (a is None) == (b is None) and (a is None or torch.equal(a, b))


def _outputs_and_grads(module, sample, weights_seed=7):
    """Outputs, then the gradients of Σ out·w (w fixed) w.r.t. the inputs that require grad
    and every parameter; and the autograd nodes behind the outputs."""
    args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
    result = module(*args, **kwargs)
    outs = _tensors(result)
    g = torch.Generator().manual_seed(weights_seed)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    wrt = [t for t in _tensors((args, list(kwargs.values()))) if t.requires_grad] + list(module.parameters())
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return result, outs, list(grads), graph_nodes(*outs)


def _second_order(module, sample):
    """Gradient penalty and Hessian-vector product of L = Σ out·w w.r.t. inputs and parameters."""
    args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
    outs = _tensors(module(*args, **kwargs))
    g = torch.Generator().manual_seed(11)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).pow(2).sum() for o in outs)
    wrt = [t for t in _tensors((args, list(kwargs.values()))) if t.requires_grad] + list(module.parameters())
    grads = torch.autograd.grad(loss, wrt, create_graph=True)
    penalty = sum(d.pow(2).sum() for d in grads)
    dpenalty = torch.autograd.grad(penalty, wrt, retain_graph=True)
    v = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in wrt]
    hvp = torch.autograd.grad(sum((d * w).sum() for d, w in zip(grads, v)), wrt)
    return [*grads, *dpenalty, *hvp]


def _gradgradcheck(module, sample) -> bool:
    """float64 gradgradcheck of the rnnkit module in the inputs that require grad and its parameters."""
    from torch.func import functional_call

    args, kwargs = sample.forward_input.args, sample.forward_input.kwargs
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    inputs = [t for t in _tensors((args, list(kwargs.values()))) if t.requires_grad]

    def rebuild(value, it):
        if isinstance(value, PackedSequence):
            return PackedSequence(next(it) if value.data.requires_grad else value.data, value.batch_sizes,
                                  value.sorted_indices, value.unsorted_indices)
        if isinstance(value, torch.Tensor):
            return next(it) if value.requires_grad else value
        if isinstance(value, tuple):
            return tuple(rebuild(v, it) for v in value)
        return value

    def f(*flat):
        it = iter(flat[:len(inputs)])
        call_args = tuple(rebuild(a, it) for a in args)
        return tuple(_tensors(functional_call(module, dict(zip(names, flat[len(inputs):])), call_args, kwargs)))

    return torch.autograd.gradgradcheck(f, (*inputs, *params), atol=1e-5, fast_mode=True)


def run(path: str) -> dict:
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

    setting, path_kwargs = ENGINE_PATHS[path]
    os.environ["RNNKIT_NATIVE"] = setting
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"run": 0, "passed": 0})
    failures: list[str] = []

    def check(kind: str, name: str, fn) -> None:
        counts[kind]["run"] += 1
        try:
            fn()
        except Exception as e:  # noqa: BLE001 -- every failure is reported with its case
            failures.append(f"{kind} {name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        else:
            counts[kind]["passed"] += 1

    infos = [info for info in module_db if info.module_cls in RNNKIT]
    assert {info.module_cls for info in infos} == set(RNNKIT), "module_db lost an entry"
    gradgradchecked: set[tuple] = set()
    for info in infos:
        cls, ours_cls = info.module_cls, RNNKIT[info.module_cls]
        for dtype in (torch.float32, torch.float64):
            for requires_grad in (False, True):
                for training in (False, True):
                    samples = info.module_inputs_func(info, device="cpu", dtype=dtype, requires_grad=requires_grad,
                                                      training=training, with_packed_sequence=True)
                    for k, sample in enumerate(samples):
                        name = (f"{cls.__name__}[{k}] {sample.constructor_input.kwargs} {dtype} "
                                f"requires_grad={requires_grad} training={training}")
                        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
                        torch.manual_seed(0)
                        ref = cls(*args, **kwargs).to(dtype).train(training)
                        ours = ours_cls(*args, **kwargs, **path_kwargs).to(dtype).train(training)
                        ours.load_state_dict(ref.state_dict())
                        state = {}

                        def forward(ref=ref, ours=ours, sample=sample, dtype=dtype, state=state, cls=cls):
                            want, want_outs, want_grads, _ = _outputs_and_grads(ref, sample)
                            got, got_outs, got_grads, nodes = _outputs_and_grads(ours, sample)
                            _check_packed_layout(got, want)
                            assert len(got_outs) == len(want_outs)
                            for a, b in zip([*got_outs, *got_grads], [*want_outs, *want_grads]):
                                assert (a is None) == (b is None)
                                if a is not None:
                                    torch.testing.assert_close(a, b, **TOLERANCE[dtype])
                            fast = {"native": NATIVE.get(cls, "_BPTTBackward"), "python": "_BPTTBackward"}.get(path)
                            assert fast is None or fast in nodes, f"{fast} did not run: {sorted(nodes)}"
                            assert path == "native" or not nodes & set(NATIVE.values())
                            assert path != "autograd" or "_BPTTBackward" not in nodes
                            state["outs"] = got_outs

                        check("forward", name, forward)

                        def pickled(ours=ours, sample=sample, state=state):
                            loaded = pickle.loads(pickle.dumps(ours))
                            outs = _tensors(loaded(*sample.forward_input.args, **sample.forward_input.kwargs))
                            for a, b in zip(outs, state["outs"], strict=True):
                                torch.testing.assert_close(a, b, rtol=0, atol=0)

                        if "outs" in state:
                            check("pickle", name, pickled)
                        if dtype == torch.float64 and requires_grad and not training:
                            def gradgrad(ref=ref, ours=ours, sample=sample):
                                for a, b in zip(_second_order(ours, sample), _second_order(ref, sample)):
                                    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)

                            check("gradgrad vs torch.nn", name, gradgrad)
                            inp = sample.forward_input.args[0]
                            kind = (cls, isinstance(inp, PackedSequence), kwargs.get("bidirectional"))
                            if kind not in gradgradchecked:
                                gradgradchecked.add(kind)

                                def checked(ours=ours, sample=sample):
                                    assert _gradgradcheck(ours, sample)

                                check("gradgradcheck", name, checked)

        for dtype in (torch.float32, torch.float64) if info.module_error_inputs_func is not None else ():
            for requires_grad in (False, True):
                errors = info.module_error_inputs_func(info, device="cpu", dtype=dtype, requires_grad=requires_grad,
                                                       training=False)
                for k, error in enumerate(errors):
                    sample = error.module_error_input
                    name = (f"{cls.__name__} error[{k}] {sample.constructor_input.args} "
                            f"{sample.constructor_input.kwargs} {dtype} requires_grad={requires_grad}")

                    def raises(cls=cls, ours_cls=ours_cls, error=error, sample=sample):
                        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
                        caught = []
                        for build in (cls, lambda *a, **kw: ours_cls(*a, **kw, **path_kwargs)):
                            try:
                                module = build(*args, **kwargs)
                                if error.error_on == ModuleErrorEnum.FORWARD_ERROR:
                                    module(*sample.forward_input.args, **sample.forward_input.kwargs)
                            except Exception as e:  # noqa: BLE001 -- the type is what is compared
                                caught.append(e)
                            else:
                                caught.append(None)
                        want, got = caught
                        assert isinstance(want, error.error_type), f"torch.nn itself raised {want!r}"
                        assert type(got) is type(want), f"torch.nn raised {want!r}, rnnkit {got!r}"
                        assert re.search(error.error_regex, str(got)), f"{str(got)!r} !~ {error.error_regex!r}"

                    check("errors", name, raises)
    return {"counts": dict(counts), "failures": failures}


def main(paths: list[str]) -> None:
    torch.set_num_threads(1)
    results = {path: run(path) for path in paths or list(ENGINE_PATHS)}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
