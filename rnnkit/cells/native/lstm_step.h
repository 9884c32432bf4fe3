// What the LSTM's two training loops (lstm.cpp, lstm_ln.cpp) do alike around their gate passes:
// per forward step the GEMM's input h_{t-1} ⊙ rmask and the kept c_{t-1}, the cell's new state
// (lengths, zoneout) and the new h (projection, lengths, zoneout); per backward step c_{t-1}
// and the gradients carried from step to step. The gate passes themselves differ (lstm.cpp:
// lstm_unit on the gates; lstm_ln.cpp: three norms around it).

#pragma once

#include "common.h"

namespace rnnkit_native {

// The step's GEMM input h_{t-1} ⊙ rmask (B·P entries from h; rm may be null): written into
// hr_keep when kept for the backward, else into hr_tmp with a mask, else h itself. c_{t-1}
// (B·H entries from c) is copied into cin_keep where that is not null.
template <typename T>
inline const T* lstm_step_input(const T* h, const T* c, const T* rm, T* hr_keep, T* hr_tmp, T* cin_keep,
                                int64_t BP, int64_t BH) {
  if (cin_keep) std::memcpy(cin_keep, c, sizeof(T) * BH);
  T* hr = hr_keep ? hr_keep : (rm ? hr_tmp : nullptr);
  if (hr == nullptr) return h;
  if (rm) {
    for (int64_t k = 0; k < BP; ++k) hr[k] = h[k] * rm[k];
  } else {
    std::memcpy(hr, h, sizeof(T) * BP);
  }
  return hr;
}

// A row's new cell state from its c' (cn), with zoneout (z not null) lerp(c', c, z). (Past
// the row's length the caller leaves c as it is.)
template <typename T>
RNNKIT_INLINE void lstm_cell_update(T* __restrict c, const T* __restrict cn, const T* __restrict z, int64_t H) {
  if (z) {
    for (int64_t j = 0; j < H; ++j) c[j] = cn[j] + z[j] * (c[j] - cn[j]);
  } else {
    std::memcpy(c, cn, sizeof(T) * H);
  }
}

// The step's output and new h: with projection (w_hr_t (H, P) defined) out = hn W_hrᵀ, else
// out already holds o ⊙ tanh(...); then per row lengths and zoneout (state_row_forward) into h.
// vd_t, zh_t: the step's rows of valid and zh, or null.
template <typename T>
inline void lstm_step_output(T* out, const T* hn, T* h, const Tensor& w_hr_t, const T* zh_t, const T* vd_t,
                             int64_t B, int64_t H, int64_t P, const at::TensorOptions& opts) {
  if (w_hr_t.defined()) {
    std::fill(out, out + B * P, T(0));
    step_gemm<T>(out, hn, w_hr_t, B, H, P, opts);
  }
  for (int64_t b = 0; b < B; ++b) {
    const int64_t r = b * P;
    state_row_forward(out + r, h + r, zh_t ? zh_t + r : nullptr, vd_t ? vd_t[b] : T(1), P);
  }
}

// c_{t-1} of step t in the backward: kept per step (c_in (T, B, H)), or c_0 at the first step
// (c_in (1, B, H)), or the c' of the step before.
template <typename T>
inline const T* lstm_c_prev(const Tensor& cin_all, const Tensor& cnew_all, int64_t t, int64_t Tn, bool reverse) {
  const int64_t BH = cnew_all.size(1) * cnew_all.size(2);
  if (cin_all.size(0) == Tn) return cin_all.data_ptr<T>() + t * BH;
  if (t == (reverse ? Tn - 1 : 0)) return cin_all.data_ptr<T>();
  return cnew_all.data_ptr<T>() + (reverse ? t + 1 : t - 1) * BH;
}

// The gradients an LSTM loop's backward carries from step to step, and steps 1 and 2 of each
// backward step (reach).
template <typename T>
struct LstmBackState {
  Tensor dh_part;  // the part of dh not from the recurrent GEMM (B, P)
  Tensor dh_gemm;  // the recurrent GEMM's part, d(gates)_{t+1} W_hh (before the dropout mask)
  Tensor dc;       // dc reaching the state, then dc_{t-1} (B, H)
  Tensor dh_all;   // dh reaching the step (B, P), per step with projection (for dW_hr)
  Tensor dcw;      // dc reaching the step (B, H)
  Tensor dhf;      // with projection W_hrᵀ dh: what reaches o ⊙ tanh(...) (B, H); else undefined

  LstmBackState(const Tensor& dhT, const Tensor& dcT, int64_t Tn, bool proj)
      : dh_part(dhT.clone()),
        dh_gemm(at::zeros(dhT.sizes(), dhT.options())),
        dc(dcT.clone()),
        dh_all(at::empty({proj ? Tn : 1, dhT.size(0), dhT.size(1)}, dhT.options())),
        dcw(at::empty(dcT.sizes(), dcT.options())),
        dhf(proj ? at::empty(dcT.sizes(), dcT.options()) : Tensor()) {}

  T* dh_gemm_p() { return dh_gemm.data_ptr<T>(); }
  T* dc_p() { return dc.data_ptr<T>(); }
  T* dcw_p() { return dcw.data_ptr<T>(); }

  // Steps 1 and 2 at step t (its rows of dout, zh, zc, valid: null where absent; rm the
  // dropout mask or null; w_hr defined with projection):
  //   1. per row, the gradients reaching the new state: from step t+1 (dh_part + dh_gemm ⊙
  //      rmask), the output, zoneout (z ⊙ d(new) goes straight to the previous state) and
  //      lengths: state_row_backward writes dh (B, P) into dh_all's slot and dc (B, H) into dcw;
  //   2. through the projection: d(o ⊙ tanh(...)) = dh W_hr into dhf (B, H).
  // Returns what reaches o ⊙ tanh(...): dh itself, or dhf with projection.
  const T* reach(int64_t t, const T* do_t, const T* rm, const T* zh_t, const T* zc_t, const T* vd_t,
                 const c10::optional<Tensor>& w_hr) {
    const int64_t B = dh_part.size(0), P = dh_part.size(1), H = dc.size(1);
    const bool proj = dhf.defined();
    T* dhw = dh_all.data_ptr<T>() + (proj ? t * B * P : 0);
    T* part = dh_part.data_ptr<T>();
    const T* gemm = dh_gemm.data_ptr<T>();
    T* dcwp = dcw.data_ptr<T>();
    T* dcp = dc.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = b * P, rc = b * H;
      if (!state_row_backward(dhw + r, part + r, gemm + r, rm ? rm + r : nullptr, do_t ? do_t + r : nullptr,
                              zh_t ? zh_t + r : nullptr, vd_t ? vd_t[b] : T(1), P)) {
        continue;  // past its length: dc keeps what it has
      }
      state_row_backward(dcwp + rc, dcp + rc, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                         static_cast<const T*>(nullptr), zc_t ? zc_t + rc : nullptr, T(1), H);
    }
    if (!proj) return dhw;
    T* dhc = dhf.data_ptr<T>();
    std::fill(dhc, dhc + B * H, T(0));
    step_gemm<T>(dhc, dhw, *w_hr, B, P, H, dh_part.options());
    return dhc;
  }

  // dh_0 after the last step: what came straight through plus the GEMM's part under the mask.
  Tensor dh0(const c10::optional<Tensor>& rmask) const {
    return (rmask.has_value() && rmask->defined()) ? dh_part.add(dh_gemm.mul(*rmask)) : dh_part.add(dh_gemm);
  }
};

}  // namespace rnnkit_native
