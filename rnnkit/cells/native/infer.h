// rnnkit's forward-only native loops (inference) and the one-step runner of a whole stack
// (generation), implemented in infer.cpp and bound by module.cpp.
//
// Inference. Under torch.no_grad() (or when nothing needs a gradient) the layers run the
// same arithmetic as the training loops of lstm.cpp, gru.cpp and the Elman cell, but keep
// nothing for a backward: per step one GEMM of the recurrent input into the step's slice of
// the input projection (BLAS called directly, no tensor made per step) and one fused pass
// over the gates that writes the new h straight into the output (and c into the state).
// Layout, the options rmask / valid / zh / zc and reverse: as in common.h. Each returns its
// results by name: "out" (T, B, R) and the final state under the state's names.
//
// StackStep. One character of generation for a whole stack: the embedding rows of the
// drawn ids → every layer's step (h, c updated in place in preallocated buffers) → the
// linear head, in one call. The arithmetic of a layer's step is that of its inference loop
// with T = 1, so the logits are those of the layer's forward on one step.

#pragma once

#include "common.h"

#include <memory>

namespace rnnkit_native {

// lstm_infer
//   xw    (T, B, 4H)  x W_ihᵀ + b_ih + b_hh; overwritten (the gate pre-activations)
//   h0 (B, P), c0 (B, H), w_hh (4H, P), w_hr (P, H) or None, peep (3, H) or None
//   rmask (B, P), valid (T, B), zh (T, B, P), zc (T, B, H): as in common.h, or None
// returns "out" (T, B, P), "h" (B, P), "c" (B, H). No layer norm (lstm_forward has it).
Named lstm_infer(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                 c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                 c10::optional<Tensor> zh, c10::optional<Tensor> zc, bool reverse);

// gru_infer
//   xw (T, B, 3H) as gru_forward's (overwritten), h0 (B, H), w_hh (3H, H), b_hh (3H) or None
//   (reset_after only), rmask, valid, zh, reset_after, reverse: as gru_forward
// returns "out" (T, B, H), "h" (B, H).
Named gru_infer(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh, c10::optional<Tensor> rmask,
                c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reset_after, bool reverse);

// elman_infer: rnnkit/cells/elman.py, h' = φ(xw + (h ⊙ rmask) W_hhᵀ), φ "tanh" or "relu"
//   xw (T, B, H) x W_ihᵀ + b_ih + b_hh (overwritten), h0 (B, H), w_hh (H, H)
// returns "out" (T, B, H), "h" (B, H).
Named elman_infer(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                  c10::optional<Tensor> zh, const std::string& nonlinearity, bool reverse);

// StackStep(embedding, kinds, weights, states, head_weight, head_bias)
//   embedding  (V, E)
//   kinds      one per layer, bottom up: "lstm", "gru" (reset after), "gru_before",
//              "elman_tanh", "elman_relu"
//   weights    per layer [w_ih (G, I), w_hh (G, R), b (G) or None, then per kind]:
//                lstm        b = b_ih + b_hh; then w_hr (P, H) or None, peep (3, H) or None
//                gru         b = b_ih; then b_hh (3H) or None
//                gru_before  b = b_ih + b_hh
//                elman_*     b = b_ih + b_hh
//   states     per layer its state tensors (B, S_k) ((h, c) for the LSTM), copied in
//   head_weight (V, R), head_bias (V) or None; no head: step returns the top layer's h
// step(ids (B,) int64) → logits (B, V), a buffer overwritten by the next step.
// states() → per layer the current state (the buffers themselves).
class StackStep {
 public:
  StackStep(Tensor embedding, std::vector<std::string> kinds, std::vector<std::vector<c10::optional<Tensor>>> weights,
            std::vector<std::vector<Tensor>> states, c10::optional<Tensor> head_weight,
            c10::optional<Tensor> head_bias);
  Tensor step(const Tensor& ids);
  std::vector<std::vector<Tensor>> states() const;

  // the typed runner (infer.cpp)
  struct Impl {
    virtual ~Impl() = default;
    virtual Tensor step(const int64_t* ids) = 0;
    virtual std::vector<std::vector<Tensor>> states() const = 0;
  };

 private:
  std::shared_ptr<Impl> impl_;
  int64_t B_;
};

}  // namespace rnnkit_native
