// The LSTM's forward gate math for one unit (rnnkit/cells/lstm.py, LSTMCell.step, σ = sigmoid,
// φ = tanh), shared by the training loop's forward (lstm.cpp), the layer-norm loop's
// (lstm_ln.cpp) and the forward-only loop and one-step runner (infer.cpp), so that the
// equations are written once in C++:
//
//   i = σ(a_i [+ w_ci ⊙ c])   f = σ(a_f [+ w_cf ⊙ c])   g = φ(a_g)
//   c' = f ⊙ c + i ⊙ g         o = σ(a_o [+ w_co ⊙ c'])
//
// Scalar and always inlined: each caller keeps its own loop over the H units with its own
// stores in the loop body (what it keeps differs), which GCC vectorizes as before
// (-fopt-info-vec; docs/performance.md).

#pragma once

#include "common.h"

namespace rnnkit_native {

// Unit j's gates and new cell state.
template <typename T>
struct LstmUnit {
  T i, f, g, o, c;  // the activated gates and c'
};

// From unit j's pre-activations a_i, a_f, a_g, a_o (without the peepholes) and c_{t-1};
// pp: the peepholes (3, H) (w_ci, w_cf, w_co), read only when PEEP (a template argument, so
// that the callers' loops stay branch-free).
template <typename T, bool PEEP>
RNNKIT_INLINE LstmUnit<T> lstm_unit(T ai, T af, T ag, T ao, T c_prev, const T* pp, int64_t H,
                                    int64_t j) {
  if (PEEP) {
    ai += pp[j] * c_prev;
    af += pp[H + j] * c_prev;
  }
  const T i = sigmoid(ai), f = sigmoid(af), g = tanh_f(ag);
  const T cn = f * c_prev + i * g;
  if (PEEP) ao += pp[2 * H + j] * cn;
  return {i, f, g, sigmoid(ao), cn};
}

}  // namespace rnnkit_native
