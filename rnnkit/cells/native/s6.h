// rnnkit's native loop of the selective state space model S6 (rnnkit/cells/s6.py): the
// forward and the hand-written BPTT. Layout, options (valid, reverse, keep) and named results
// as in common.h.
//
// The matrix work of all steps is done before the loop, in PyTorch: the input projection
// u = (x, δ, B, C) and Δ = softplus(W_Δ δ + b_Δ). The loop runs per sequence (a row of B) all
// its T steps over its H·N states, with ā = exp(Δ_h A_hn) computed inside (again in the
// backward), never stored, and the states s_t kept only every 16 steps; the rows run in
// parallel.
//   s_t[h, n] = exp(Δ_h A_hn) s_{t-1}[h, n] + Δ_h x_h B_n
//   y_t[h]    = Σ_n C_n s_t[h, n] + D_h x_h

#pragma once

#include "common.h"

namespace rnnkit_native {

// s6_forward
//   u     (T, B, H + R + 2N)  rows (x, δ, B, C); read, not written (δ is not read)
//   dt    (T, B, H)           Δ
//   A     (H, N)              A = -exp(A_log);  D (H)
//   y0 (B, H), s0 (B, H·N) the initial state; valid (T, B) or None; dt_rank: R
// returns "out" (T, B, H) (0 past a sequence's length), "y" (B, H) = y at each sequence's
//   last step, "s" (B, H·N) and, when keep, "s_block" (⌈T/16⌉, B, H·N): the state entering
//   every 16th step in processing order (the backward recomputes the others).
Named s6_forward(Tensor u, Tensor dt, Tensor A, Tensor D, Tensor y0, Tensor s0, c10::optional<Tensor> valid,
                 int64_t dt_rank, bool reverse, bool keep);
// s6_backward
//   dout (T, B, H) or None, dyT (B, H), dsT (B, H·N); saved "u", "dt", "s_block" as the
//   forward had and returned them; A, D, valid, dt_rank, reverse as in the forward
// returns "du" (T, B, H + R + 2N) = d(u) with its δ columns 0 (the binding fills them from
//   "ddt"), "ddt" (T, B, H) = dΔ, "dA" (B, H, N), "dD" (B, H) (per sequence the sums over its
//   steps: the binding sums over the batch), "dy0" (B, H) and "ds0" (B, H·N).
Named s6_backward(c10::optional<Tensor> dout, Tensor dyT, Tensor dsT, const Named& saved, Tensor A, Tensor D,
                  c10::optional<Tensor> valid, int64_t dt_rank, bool reverse);

}  // namespace rnnkit_native
