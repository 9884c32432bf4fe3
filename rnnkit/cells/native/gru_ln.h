// rnnkit's native layer-norm GRU loop (gru_ln.cpp; rnnkit/cells/gru.py with layer_norm), bound
// by module.cpp. Layout, the options rmask / valid / zh, reverse and keep: as in common.h; T
// steps, B sequences, H hidden units.
//
// Every layer norm runs inside the loop (gains only; the biases follow the norms):
//   x̃ = LN(x W_ihᵀ; γ_x) + b_x      (b_x = b_ih; reset_before b_ih + b_hh)
//   reset_after:  ã = LN(hr W_hhᵀ; γ_h) + b_hh
//                 r, z = σ(x̃_rz + ã_rz),  n = tanh(x̃_n + r ⊙ ã_n)
//   reset_before: r, z = σ(x̃_rz + LN(hr W_rzᵀ; γ_h[:2H])),  n = tanh(x̃_n + LN((r ⊙ hr) W_hnᵀ; γ_h[2H:]))
//   h' = n + z ⊙ (h - n)                                    (hr = h_{t-1} ⊙ rmask)
// so the loop takes the raw input projection x W_ihᵀ (no bias, not normalized; the engine's
// hook for a binding that prepares its own input, NativeBinding.prepares_input) and its
// backward returns the gradient of that raw projection.

#pragma once

#include "common.h"

namespace rnnkit_native {

// gru_ln_forward
//   xw    (T, B, 3H)  x W_ihᵀ, the raw input projection (read, not written)
//   h0 (B, H), w_hh (3H, H)
//   rmask (B, H), valid (T, B), zh (T, B, H): as in common.h, or None
//   ln_gamma_x (3H)   γ_x, the gain of the input projection's norm
//   ln_gamma_h (3H)   γ_h, the gain of the recurrent GEMM outputs' norm(s)
//   bias_x     (3H)   b_x, added after the input norm (zeros without bias)
//   bias_h     (3H) or None: b_hh, added after the recurrent norm (reset_after with bias)
//   reset_after       true: the cuDNN form; false: the 2014 form (a second GEMM per step)
// returns "out" (T, B, H), "h" = h_T (B, H) and, when keep: "gates" (T, B, 3H) = r, z, n;
//   "rec" (T, B, 3H) = the raw recurrent GEMM outputs (reset_after hr W_hhᵀ; reset_before
//   hr W_rzᵀ and (r ⊙ hr) W_hnᵀ); "ln_stats" (T, B, 6) = μ, 1/σ of the input row and of the
//   recurrent row(s) (reset_after: the 3H row, twice; reset_before: the r,z part, the n
//   part; the backward recomputes each â = (a - μ)/σ from them); "hin" (T, B, H) = h_{t-1};
//   "hr" (T, B, H) = h_{t-1} ⊙ rmask (hin itself without a mask); reset_before "aux"
//   (T, B, H) = r ⊙ hr.
Named gru_ln_forward(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                     c10::optional<Tensor> zh, Tensor ln_gamma_x, Tensor ln_gamma_h, Tensor bias_x,
                     c10::optional<Tensor> bias_h, bool reset_after, bool reverse, bool keep);
// gru_ln_backward
//   dout (T, B, H) or None, dhT (B, H); saved "xw" (the forward's xw) and the forward's
//   "gates", "rec", "ln_stats", "hin", "hr" (other entries are ignored); w_hh, the gains,
//   bias_h and the options as in the forward
// returns "dxw" (T, B, 3H) = d(x W_ihᵀ) (dx, dW_ih: the engine's GEMMs), "drec" (T, B, 3H) =
//   d of the raw recurrent GEMM outputs (dW_hh: the binding's GEMMs), "dh0" (B, H), and
//   summed in the loop "ln_dgamma_x", "ln_dgamma_h", "dbias_x" (Σ dx̃, the gradient of b_x)
//   and, with bias_h, "dbias_h" (Σ dã), 3H each.
Named gru_ln_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor w_hh,
                      c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      Tensor ln_gamma_x, Tensor ln_gamma_h, c10::optional<Tensor> bias_h, bool reset_after,
                      bool reverse);

}  // namespace rnnkit_native
