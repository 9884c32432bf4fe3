// The Python module of rnnkit's native loops: binds the entry points that common.h declares
// (with their shapes and named results) and lstm.cpp, gru.cpp, jordan.cpp implement. The only file that
// includes the Python binding headers (the slowest part of the build to compile).

#include <torch/csrc/utils/pybind.h>

#include "common.h"
#include "elementwise.h"
#include "gru_ln.h"
#include "infer.h"
#include "lstm_ln.h"
#include "pool.h"
#include "s6.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace rnnkit_native;
  m.def("lstm_forward", &lstm_forward, "LSTM time loop, forward");
  m.def("lstm_backward", &lstm_backward, "LSTM time loop, backward");
  m.def("lstm_ln_forward", &lstm_ln_forward, "layer-norm LSTM time loop, forward");
  m.def("lstm_ln_backward", &lstm_ln_backward, "layer-norm LSTM time loop, backward");
  m.def("gru_forward", &gru_forward, "GRU time loop, forward");
  m.def("gru_backward", &gru_backward, "GRU time loop, backward");
  m.def("gru_ln_forward", &gru_ln_forward, "layer-norm GRU time loop, forward");
  m.def("gru_ln_backward", &gru_ln_backward, "layer-norm GRU time loop, backward");
  m.def("jordan_forward", &jordan_forward, "Jordan network time loop, forward");
  m.def("jordan_backward", &jordan_backward, "Jordan network time loop, backward");
  m.def("indrnn_forward", &indrnn_forward, "IndRNN time loop, forward");
  m.def("indrnn_backward", &indrnn_backward, "IndRNN time loop, backward");
  m.def("minrnn_forward", &minrnn_forward, "minGRU/minLSTM time loop, forward");
  m.def("minrnn_backward", &minrnn_backward, "minGRU/minLSTM time loop, backward");
  m.def("fopool_forward", &fopool_forward, "QRNN/SRU fo-pooling time loop, forward");
  m.def("fopool_backward", &fopool_backward, "QRNN/SRU fo-pooling time loop, backward");
  m.def("s6_forward", &s6_forward, "S6 selective state space time loop, forward");
  m.def("s6_backward", &s6_backward, "S6 selective state space time loop, backward");
  m.def("lstm_infer", &lstm_infer, "LSTM time loop, forward only (inference)");
  m.def("gru_infer", &gru_infer, "GRU time loop, forward only (inference)");
  m.def("elman_infer", &elman_infer, "Elman network time loop, forward only (inference)");
  pybind11::class_<StackStep>(m, "StackStep", "one step of embedding, recurrent stack and head (generation)")
      .def(pybind11::init<Tensor, std::vector<std::string>, std::vector<std::vector<c10::optional<Tensor>>>,
                          std::vector<std::vector<Tensor>>, c10::optional<Tensor>, c10::optional<Tensor>>())
      .def("step", &StackStep::step, "ids (B,) -> logits (B, V), the state advanced in place")
      .def("states", &StackStep::states, "per layer the current state tensors");
  m.def("pool_clear", &pool_clear, "drop the buffers the layer-norm loops keep between calls (pool.h)");
  m.def("pool_bytes", &pool_bytes, "the bytes of the buffers the layer-norm loops keep (pool.h)");
  m.attr("activations") = pybind11::cast(activation_names());  // the activations with native code, by name
}
