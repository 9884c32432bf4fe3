// rnnkit's native layer-norm LSTM loop (lstm_ln.cpp; rnnkit/cells/lstm.py with layer_norm),
// bound by module.cpp. Layout, the options rmask / valid / zh / zc, reverse and keep: as in
// common.h; T steps, B sequences, H hidden units, P the output size (proj_size, else H).
//
// All three layer norms run inside the loop:
//   a = LN(x W_ihᵀ; γ_x) + LN(hr W_hhᵀ; γ_h) + b      (b = b_ih + b_hh; hr = h_{t-1} ⊙ rmask)
//   i, f, g, o, c' as the LSTM (with peepholes),       h' = o ⊙ tanh(LN(c'; γ_c, β_c))
// so the loop takes the raw input projection x W_ihᵀ (no bias, not normalized; the engine's
// hook for a binding that prepares its own input, NativeBinding.prepares_input) and its
// backward returns the gradient of that raw projection.

#pragma once

#include "common.h"

namespace rnnkit_native {

// lstm_ln_forward
//   xw    (T, B, 4H)  x W_ihᵀ, the raw input projection (read, not written)
//   h0 (B, P), c0 (B, H), w_hh (4H, P), w_hr (P, H) or None, peep (3, H) or None
//   rmask (B, P), valid (T, B), zh (T, B, P), zc (T, B, H): as in common.h, or None
//   ln_gamma_x (4H)   γ_x, the gain of the input projection's norm
//   ln_gamma_h (4H)   γ_h, the gain of the recurrent projection's norm
//   bias       (4H)   b_ih + b_hh (zeros without bias), added after both norms
//   ln_gamma_c, ln_beta_c (H): the cell norm's gain and bias
// returns "out" (T, B, P), "h" = h_T (B, P), "c" = c_T (B, H) and, when keep: "gates"
//   (T, B, 4H) the activated i, f, g, o; "rec" (T, B, 4H) = hr W_hhᵀ, the raw recurrent GEMM
//   output; "ln_stats" (T, B, 6) = μ, 1/σ of the input row, of the recurrent row and of c'
//   (the backward recomputes each â = (a - μ)/σ from them); "hr" (T, B, P); "c_in"
//   (c_{t-1}: (T, B, H) with zoneout or lengths, else (1, B, H) = c_0); "c_new" (T, B, H) =
//   c_t before zoneout/lengths; with projection "h_full" (T, B, H) = o ⊙ tanh(LN(c')).
Named lstm_ln_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                      c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                      c10::optional<Tensor> zh, c10::optional<Tensor> zc, Tensor ln_gamma_x, Tensor ln_gamma_h,
                      Tensor bias, Tensor ln_gamma_c, Tensor ln_beta_c, bool reverse, bool keep);
// lstm_ln_backward
//   dout (T, B, P) or None, dhT (B, P), dcT (B, H); saved "xw" (the forward's xw) and the
//   forward's "gates", "rec", "ln_stats", "c_in", "c_new" (other entries are ignored); the
//   weights, the gains (no bias) and the options as in the forward
// returns "dxw" (T, B, 4H) = d(x W_ihᵀ) (dx, dW_ih: the engine's GEMMs), "drec" (T, B, 4H) =
//   d(hr W_hhᵀ) (dW_hh: the binding's GEMM), "dh0" (B, P), "dc0" (B, H), and summed in the
//   loop "ln_dgamma_x", "ln_dgamma_h", "dbias" (4H each: Σ da ⊙ â_x, Σ da ⊙ â_h, Σ da, with
//   da the gradient of the gate pre-activations), "ln_dgamma_c", "ln_dbeta_c" (H), with
//   peepholes "dpeep" (3, H) and with projection "dh" (T, B, P), the gradient reaching the
//   projected h (dW_hr = Σ dhᵀ h_full).
Named lstm_ln_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved, Tensor w_hh,
                       c10::optional<Tensor> w_hr, c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                       c10::optional<Tensor> valid, c10::optional<Tensor> zh, c10::optional<Tensor> zc,
                       Tensor ln_gamma_x, Tensor ln_gamma_h, Tensor ln_gamma_c, Tensor ln_beta_c, bool reverse);

}  // namespace rnnkit_native
