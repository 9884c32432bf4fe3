// rnnkit's native loops of the element-wise recurrences without a recurrent weight matrix:
// minGRU and minLSTM (minrnn.cpp), the QRNN's and the SRU's fo-pooling (qrnn.cpp). Layout, options (rmask, valid, zh, reverse, keep) and named results as in
// common.h.
//
// These recurrences have no recurrent weight matrix: every step is element-wise in the
// state, with coefficients from that step's input projection (and, for the SRU, the previous
// c), so each sequence (a row of B) runs all its T steps in one pass over its H units, and
// the rows run in parallel. The gates are computed inside the loop (from the saved input
// projection again in the backward), never stored.

#pragma once

#include "common.h"

namespace rnnkit_native {

// minGRU and minLSTM (minrnn.cpp): rnnkit/cells/minrnn.py.
//   kind "mingru"         xw = (xz, xh):      a = σ(-xz),  b = (1 - a) ⊙ h̃
//        "minlstm"        xw = (xf, xi, xh):  a = f / (f + i), b = i / (f + i) ⊙ h̃
//        "minlstm_plain"  xw = (xf, xi, xh):  a = f,           b = i ⊙ h̃
//   with f = σ(xf), i = σ(xi), h̃ = act(xh); candidate "identity", "g" (x + 1/2 for x ≥ 0,
//   σ(x) below) or "tanh".
//
// minrnn_forward
//   xw    (T, B, G·H)  x W_ihᵀ + b, G = 2 (mingru) or 3; read, not written
//   h0 (B, H); rmask (B, H), valid (T, B), zh (T, B, H): as in common.h, or None
// returns "out" (T, B, H), "h" = h_T (B, H) and, when keep, "hr" (T, B, H) = h_{t-1} ⊙ rmask.
Named minrnn_forward(Tensor xw, Tensor h0, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                     c10::optional<Tensor> zh, const std::string& kind, const std::string& candidate,
                     bool reverse, bool keep);
// minrnn_backward
//   dout (T, B, H) or None, dhT (B, H); saved "xw" (T, B, G·H) and "hr" (T, B, H) as the
//   forward had and returned them; rmask, valid, zh, kind, candidate, reverse as in the forward
// returns "dxw" (T, B, G·H) = d(xw) and "dh0" (B, H).
Named minrnn_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, c10::optional<Tensor> rmask,
                      c10::optional<Tensor> valid, c10::optional<Tensor> zh, const std::string& kind,
                      const std::string& candidate, bool reverse);

// fo-pooling of the QRNN and the SRU (qrnn.cpp): rnnkit/cells/qrnn.py, sru.py. The state is
// (h, c); only c is recurrent, h is the output (kept past a sequence's length like c).
//   kind "qrnn"  u = (z̃, f̃, õ) (T, B, 3H), the causal convolution's output:
//                z = tanh(z̃), f = σ(f̃), c' = f ⊙ c + (1 - f) ⊙ z, h' = σ(õ) ⊙ c'
//        "sru"   u = (x̃, f̃, r̃, x̂) (T, B, 4H):  f = σ(f̃ + v_f ⊙ c), r = σ(r̃ + v_r ⊙ c),
//                c' = f ⊙ c + (1 - f) ⊙ x̃,  h' = r ⊙ c' + (1 - r) ⊙ α x̂
//                (v_f, v_r (H) the gate recurrence, or None for the linear form: v = 0)
//
// fopool_forward
//   u (T, B, 3H or 4H) read, not written; h0, c0 (B, H); v_f, v_r (H) or None (sru only);
//   valid (T, B) or None; alpha: α (sru)
// returns "out" (T, B, H) (0 past a sequence's length), "h" and "c" (B, H) after each
//   sequence's last step and, when keep, "c_in" (T, B, H) = c_{t-1}.
Named fopool_forward(Tensor u, Tensor h0, Tensor c0, c10::optional<Tensor> v_f, c10::optional<Tensor> v_r,
                     c10::optional<Tensor> valid, const std::string& kind, double alpha, bool reverse, bool keep);
// fopool_backward
//   dout (T, B, H) or None, dhT, dcT (B, H); saved "u" and "c_in" as the forward had and
//   returned them; v_f, v_r, valid, kind, alpha, reverse as in the forward
// returns "du" (T, B, 3H or 4H) = d(u), "dh0", "dc0" (B, H) and, with v_f, "dv_f", "dv_r"
//   (B, H): per sequence the sums over its steps (the binding sums over the batch).
Named fopool_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved,
                      c10::optional<Tensor> v_f, c10::optional<Tensor> v_r, c10::optional<Tensor> valid,
                      const std::string& kind, double alpha, bool reverse);

}  // namespace rnnkit_native
