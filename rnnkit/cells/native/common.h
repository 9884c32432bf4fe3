// rnnkit's native time loops: what the LSTM, GRU and Jordan loops share, and every entry
// point with its arguments, their shapes and its named results (one .cpp per cell family
// implements its own; module.cpp binds them for Python; SOURCES in rnnkit/engine/native.py
// lists the files and builds them).
//
// Each loop runs the forward and the hand-written BPTT of its Python cell
// (rnnkit/cells/lstm.py, gru.py, jordan.py: each holds its binding, the NativeBinding that
// calls these entry points and assembles the parameter gradients) with the engine's per-step
// options of rnnkit/engine/bptt.py (variational recurrent dropout, zoneout, lengths). The
// arithmetic is the Python cell's, line by line; what changes is the cost per step: one GEMM call plus one
// fused pass over the gates, instead of a dozen tensor operations dispatched from Python.
//
// Layout: every tensor is contiguous, float32 or float64 (all of one call alike), on the
// CPU. T steps, B sequences, H hidden units, P the LSTM's output size (proj_size, else H),
// O the Jordan network's output size. Gates are ordered as in torch.nn: i, f, g, o (LSTM)
// and r, z, n (GRU). Optional arguments are None from Python.
//
// Options common to every loop:
//   rmask  (B, S)     the variational recurrent dropout mask: the GEMM reads state ⊙ rmask
//                     (S: the recurrent state's size, P / H / O)
//   valid  (T, B)     1 where step t of sequence b is inside its length, else 0: past its
//                     length a sequence's output is 0 and its state passes through
//   zh, zc (T, B, S)  zoneout masks: the state keeps z ⊙ old + (1 - z) ⊙ new
//   reverse           run the steps from T-1 down to 0 (the backward direction)
//   keep              return what the backward needs (false under no_grad)
//
// Results are named (a Python dict): each forward returns "out" and the final state under
// the state's names and, when keep, the tensors its backward reads; the Python binding keeps
// them by name and hands them back as the backward's `saved` (with "gates" / "h", the
// overwritten xw, added). Each backward returns its gradients by name.
//
// Only ATen's per-operator headers are included here (not torch/extension.h): the family
// files then compile in a few seconds each, in parallel, and only module.cpp pays for the
// Python binding headers.

#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace rnnkit_native {

using at::Tensor;

// The named results and saved tensors of the entry points (a dict on the Python side).
using Named = std::map<std::string, Tensor>;

// The entry `name` of a Named, or an error naming what is missing.
inline const Tensor& entry(const Named& m, const char* name) {
  auto it = m.find(name);
  TORCH_CHECK(it != m.end(), "rnnkit native loop: no tensor named '", name, "' among the saved tensors");
  return it->second;
}

// ---------------------------------------------------------------------------------------
// Entry points

// LSTM (lstm.cpp): rnnkit/cells/lstm.py with sigmoid/tanh, peepholes, projection (the
// layer-norm LSTM: lstm_ln.cpp, lstm_ln.h).
//
// lstm_forward
//   xw    (T, B, 4H)  x W_ihᵀ + b; overwritten with the activated gates i, f, g, o, which
//                     the backward reads
//   h0 (B, P), c0 (B, H)
//   w_hh  (4H, P)     w_hr (P, H) or None: the projection
//   peep  (3, H)      the peephole weights w_ci, w_cf, w_co, or None
//   rmask (B, P), valid (T, B), zh (T, B, P), zc (T, B, H): as above, or None
// returns "out" (T, B, P), "h" = h_T (B, P), "c" = c_T (B, H) and, when keep:
//   "hr" (T, B, P) = h_{t-1} ⊙ rmask, "c_in" = c_{t-1} ((T, B, H) with zoneout or lengths,
//   else (1, B, H) = c_0), "c_new" (T, B, H) = c_t before zoneout/lengths, "tc" (T, B, H) =
//   tanh(c_t), with projection "h_full" (T, B, H) = o ⊙ tanh(c_t) before W_hr.
Named lstm_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                   c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                   c10::optional<Tensor> zh, c10::optional<Tensor> zc, bool reverse, bool keep);
// lstm_backward
//   dout  (T, B, P) or None, dhT (B, P), dcT (B, H): the gradients reaching the outputs
//   saved "gates" (T, B, 4H) (the forward's xw), "c_in", "c_new", "tc", as lstm_forward
//         returned them (other entries are ignored)
//   w_hh, w_hr, peep, rmask, valid, zh, zc, reverse: as in the forward
// returns "dgates" (T, B, 4H) = d(xw) = d(h W_hhᵀ), "dh0" (B, P), "dc0" (B, H), with
//   projection "dh" (T, B, P), the gradient reaching the projected h (dW_hr = Σ dhᵀ h_full),
//   with peepholes "dpeep" (3, H) = their gradients (Σ di_a ⊙ c_{t-1}, Σ df_a ⊙ c_{t-1},
//   Σ do_a ⊙ c_t, summed in the loop). The binding (cells/lstm.py) forms the other weight
//   gradients with one GEMM or reduction each.
Named lstm_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved, Tensor w_hh,
                    c10::optional<Tensor> w_hr, c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                    c10::optional<Tensor> valid, c10::optional<Tensor> zh, c10::optional<Tensor> zc, bool reverse);

// GRU (gru.cpp): rnnkit/cells/gru.py, both forms (the layer-norm GRU: gru_ln.cpp, gru_ln.h).
//
// gru_forward
//   xw    (T, B, 3H)  x W_ihᵀ + b_ih (reset_before: + b_hh); overwritten with r, z, n
//   h0 (B, H), w_hh (3H, H)
//   b_hh  (3H) or None: the recurrent bias (reset_after only; reset_before has it in xw)
//   rmask (B, H), valid (T, B), zh (T, B, H): as above, or None
//   reset_after       true: n = tanh(x_n + r ⊙ (h W_hnᵀ + b_hn)) (cuDNN); false: the 2014 form
// returns "out" (T, B, H), "h" = h_T (B, H) and, when keep, "hin" (T, B, H) = h_{t-1},
//   "hr" (T, B, H) = h_{t-1} ⊙ rmask (hin itself without a mask), "aux" (T, B, H) =
//   reset_after h W_hnᵀ + b_hn, reset_before r ⊙ hr.
Named gru_forward(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh, c10::optional<Tensor> rmask,
                  c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reset_after, bool reverse, bool keep);
// gru_backward
//   dout (T, B, H) or None, dhT (B, H); saved "gates" (T, B, 3H) (the forward's xw), "hin",
//   "hr", "aux" (T, B, H), as the forward returned them; w_hh, rmask, valid, zh, reset_after,
//   reverse as in the forward
// returns "dxw" (T, B, 3H) = d(xw), "drec" (T, B, 3H) = d of the recurrent GEMM outputs
//   (reset_after h W_hhᵀ + b_hh; reset_before equal to dxw) and "dh0" (B, H).
Named gru_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor w_hh,
                   c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                   bool reset_after, bool reverse);

// Jordan network (jordan.cpp): rnnkit/cells/jordan.py, the recurrence from the previous output.
//   h = φ(x W_ihᵀ + b + (y ⊙ rmask) W_hhᵀ),   y' = ψ(h W_hoᵀ + b_ho)
// φ and ψ are given by their names in rnnkit/cells/activations.py; kActivations is the one
// list of those with native code (the extension's `activations`; cells/jordan.py asks it
// through NATIVE_ACTIVATIONS, which a test checks against it). "hard_sigmoid" is PyTorch's
// hardsigmoid, relu6(x + 3) / 6; each derivative is written through the activation's
// output, as in rnnkit/cells/activations.py.
enum Act : int64_t { kIdentity = 0, kSigmoid = 1, kTanh = 2, kRelu = 3, kHardSigmoid = 4 };
inline const std::vector<std::string>& activation_names() {  // indexed by Act
  static const std::vector<std::string> names = {"identity", "sigmoid", "tanh", "relu", "hard_sigmoid"};
  return names;
}
inline int64_t act_from_name(const std::string& name) {
  const auto& names = activation_names();
  for (size_t k = 0; k < names.size(); ++k) {
    if (names[k] == name) return static_cast<int64_t>(k);
  }
  TORCH_CHECK(false, "rnnkit native loop: no native code for the activation '", name, "'");
  return 0;
}
//
// jordan_forward
//   xw    (T, B, H)   x W_ihᵀ + b; overwritten with h
//   y0 (B, O), w_hh (H, O), w_ho (O, H), b_ho (O) or None
//   rmask (B, O), valid (T, B), zh (T, B, O): as above, or None
//   phi, psi          the names of φ and ψ (activation_names())
// returns "out" (T, B, O), "y" = y_T (B, O) and, when keep, "yr" (T, B, O) = y_{t-1} ⊙ rmask
//   and "y_new" (T, B, O) = ψ(...) before zoneout and lengths.
Named jordan_forward(Tensor xw, Tensor y0, Tensor w_hh, Tensor w_ho, c10::optional<Tensor> b_ho,
                     c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                     const std::string& phi, const std::string& psi, bool reverse, bool keep);
// jordan_backward
//   dout (T, B, O) or None, dyT (B, O); saved "h" (T, B, H) (the forward's xw) and "y_new"
//   (T, B, O); w_hh, w_ho, rmask, valid, zh, phi, psi, reverse as in the forward
// returns "da" (T, B, H) = d(xw) (= of the recurrent pre-activation), "dz" (T, B, O) = of
//   the output pre-activation, and "dy0" (B, O).
Named jordan_backward(c10::optional<Tensor> dout, Tensor dyT, const Named& saved, Tensor w_hh, Tensor w_ho,
                      c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      const std::string& phi, const std::string& psi, bool reverse);

// IndRNN (indrnn.cpp): rnnkit/cells/indrnn.py, an element-wise recurrence (no GEMM per step).
//   a = xw + u ⊙ (h ⊙ rmask),   h' = φ(a)
//
// indrnn_forward
//   xw    (T, B, H)   x W_ihᵀ + b; overwritten with h' = φ(a) (before zoneout and lengths)
//   h0 (B, H), u (H) the recurrent weight (weight_hh, already clamped by the layer)
//   rmask (B, H), valid (T, B), zh (T, B, H): as above, or None
//   phi               the name of φ (activation_names(): relu, tanh, sigmoid, identity)
// returns "out" (T, B, H), "h" = h_T (B, H) and, when keep, "hr" (T, B, H) = h_{t-1} ⊙ rmask.
Named indrnn_forward(Tensor xw, Tensor h0, Tensor u, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                     c10::optional<Tensor> zh, const std::string& phi, bool reverse, bool keep);
// indrnn_backward
//   dout (T, B, H) or None, dhT (B, H); saved "h" (T, B, H) (the forward's xw); u, rmask,
//   valid, zh, phi, reverse as in the forward
// returns "da" (T, B, H) = d(xw) (= of the pre-activation: du = Σ da ⊙ hr, db = Σ da are the
//   binding's) and "dh0" (B, H).
Named indrnn_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor u,
                      c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      const std::string& phi, bool reverse);

// ---------------------------------------------------------------------------------------
// Shared by the loops

// exp for float without libm calls, so that the gate loops vectorize: 2^n · p(r) with
// x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial (relative error ~1e-7, as expf).
// n is rounded with the 1.5·2^23 trick (pure arithmetic: no call, no branch).
// RNNKIT_INLINE: the gate loops vectorize only with these inlined, and GCC's heuristics do
// not always inline a function with external linkage into every instantiation on their own.
#define RNNKIT_INLINE inline __attribute__((always_inline))
RNNKIT_INLINE float exp_f(float x) {
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.3f ? 88.3f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
RNNKIT_INLINE double exp_f(double x) { return std::exp(x); }

template <typename T> RNNKIT_INLINE T sigmoid(T x) { return T(1) / (T(1) + exp_f(-x)); }

template <typename T> RNNKIT_INLINE T tanh_f(T x) {
  const T e = exp_f(T(-2) * std::fabs(x));  // in (0, 1]: no overflow, no cancellation in 1 + e
  return std::copysign((T(1) - e) / (T(1) + e), x);
}
RNNKIT_INLINE double tanh_f(double x) { return std::tanh(x); }

template <typename T> const T* ptr_or_null(const c10::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? t->data_ptr<T>() : nullptr;
}

inline int64_t grain(int64_t per_row) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(1, per_row)); }

// C (M, N) += A (M, K) · W (K, N), all row-major and contiguous: one step's recurrent
// GEMM (BLAS through ATen, on tensors that wrap the buffers).
template <typename T>
inline void step_gemm(T* C, const T* A, const Tensor& W, int64_t M, int64_t K, int64_t N,
                      const at::TensorOptions& opts) {
  Tensor c = at::from_blob(C, {M, N}, opts);
  at::addmm_out(c, c, at::from_blob(const_cast<T*>(A), {M, K}, opts), W);
}

// The engine's per-step handling of lengths and zoneout (rnnkit/engine/bptt.py), for one row of
// n state units, shared by every loop below.
//
// Forward: `out` holds the step's new state; past the row's length (v = 0) the output is
// zero and the state stays, with zoneout the state keeps z ⊙ old; `state` gets the result.
template <typename T>
inline void state_row_forward(T* __restrict out, T* __restrict state, const T* __restrict z, T v, int64_t n) {
  if (v == T(0)) {
    std::fill(out, out + n, T(0));
    return;
  }
  if (z) {
    for (int64_t j = 0; j < n; ++j) out[j] += z[j] * (state[j] - out[j]);  // lerp(new, old, z)
  }
  std::memcpy(state, out, sizeof(T) * n);
}

// Backward: `part` holds what reached the state from step t+1 without the recurrent GEMM,
// `gemm` (may be null) the recurrent GEMM's part before the dropout mask `rm` (may be
// null), `dout` (may be null) the output's gradient. Writes into `d` what reaches the
// cell's step and into `part` what goes straight to the previous state: all of it past the
// row's length (then d = 0 and this returns false), z ⊙ it with zoneout, else nothing.
template <typename T>
inline bool state_row_backward(T* __restrict d, T* __restrict part, const T* __restrict gemm,
                               const T* __restrict rm, const T* __restrict dout, const T* __restrict z, T v,
                               int64_t n) {
  if (gemm && rm) {
    for (int64_t j = 0; j < n; ++j) d[j] = part[j] + gemm[j] * rm[j];
  } else if (gemm) {
    for (int64_t j = 0; j < n; ++j) d[j] = part[j] + gemm[j];
  } else {
    std::memcpy(d, part, sizeof(T) * n);
  }
  if (dout && v != T(0)) {
    for (int64_t j = 0; j < n; ++j) d[j] += dout[j];
  }
  if (v == T(0)) {  // past its length the state passed through unchanged
    std::memcpy(part, d, sizeof(T) * n);
    std::fill(d, d + n, T(0));
    return false;
  }
  if (z) {
    for (int64_t j = 0; j < n; ++j) {
      part[j] = d[j] * z[j];
      d[j] -= part[j];
    }
  } else {
    std::fill(part, part + n, T(0));
  }
  return true;
}

// Layer norm (Ba et al. 2016; rnnkit/cells/base.py): â = (a - μ)/σ with σ² the biased
// variance plus LN_EPS, as torch.native_layer_norm. The statistics of a row come from one
// pass of shifted sums, S1 = Σ (a - K), S2 = Σ (a - K)² with K = a[0]: μ = K + S1/n,
// σ² = S2/n - (S1/n)². The shift keeps the subtraction from cancelling when |μ| ≫ σ (the
// error is that of the two-pass form when K is within a few σ of μ, as a row's own entry
// is); the omp simd reduction sums in one partial sum per lane, a short pairwise sum.
// Returns (μ, 1/σ).
template <typename T>
RNNKIT_INLINE void row_moments(const T* __restrict a, int64_t n, T& mean, T& rstd) {
  const T K = a[0];
  T s1 = T(0), s2 = T(0);
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < n; ++j) {
    const T d = a[j] - K;
    s1 += d;
    s2 += d * d;
  }
  const T m = s1 / T(n);
  const T var = std::max(s2 / T(n) - m * m, T(0));
  mean = K + m;
  rstd = T(1) / std::sqrt(var + T(1e-5));
}

// The entry points' argument checks.
inline void check(const Tensor& t, const char* name, const Tensor& like) {
  TORCH_CHECK(t.is_contiguous(), "rnnkit native loop: ", name, " must be contiguous");
  TORCH_CHECK(t.device().is_cpu(), "rnnkit native loop: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), "rnnkit native loop: ", name, " has dtype ",
              t.scalar_type(), ", expected ", like.scalar_type());
}

inline void check_opt(const c10::optional<Tensor>& t, const char* name, const Tensor& like) {
  if (t.has_value() && t->defined()) check(*t, name, like);
}

}  // namespace rnnkit_native
