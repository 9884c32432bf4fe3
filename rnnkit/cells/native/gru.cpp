// rnnkit's native GRU time loop (rnnkit/cells/gru.py, both forms, without layer norm: the
// layer-norm GRU's loop is gru_ln.cpp): the forward and the hand-written BPTT. Entry points
// and shapes: common.h.
//
//   reset_after:  r, z = σ(x_rz + (h W_hhᵀ + b_hh)_rz),  n = tanh(x_n + r ⊙ (h W_hnᵀ + b_hn))
//   reset_before: r, z = σ(x_rz + h W_rzᵀ),              n = tanh(x_n + (r ⊙ h) W_hnᵀ)
//   h' = n + z ⊙ (h - n)
// (x includes b_ih, and for reset_before also b_hh.) h is masked by the recurrent dropout
// mask before the GEMMs (hr); the state itself is not.

#include "common.h"

namespace rnnkit_native {
namespace {

// Forward. xw (T, B, 3H) is overwritten with r, z, n. Returns out, h_T and, when keep,
// hin (T, B, H) = h_{t-1}, hr (T, B, H) = h_{t-1} ⊙ mask (only with a mask), and
// aux (T, B, H): reset_after the recurrent n pre-activation h W_hnᵀ + b_hn, reset_before r ⊙ hr.
template <typename T>
Named gru_forward_impl(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh,
                                     c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                                     c10::optional<Tensor> zh, bool reset_after, bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = h0.size(1);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* bh = ptr_or_null<T>(b_hh);
  Tensor hin_all, hr_all, aux_all;
  if (keep) {
    hin_all = at::empty({Tn, B, H}, opts);
    if (rm) hr_all = at::empty({Tn, B, H}, opts);
    aux_all = at::empty({Tn, B, H}, opts);
  }
  Tensor hr_tmp = at::empty({B, H}, opts);
  Tensor aux_tmp = at::empty({B, H}, opts);
  Tensor rec = at::empty({B, reset_after ? 3 * H : 2 * H}, opts);  // recurrent GEMM output
  Tensor nrec = reset_after ? Tensor() : at::empty({B, H}, opts);  // (r ⊙ hr) W_hnᵀ
  Tensor w_t = reset_after ? w_hh.t().contiguous() : w_hh.narrow(0, 0, 2 * H).t().contiguous();
  Tensor wn_t = reset_after ? Tensor() : w_hh.narrow(0, 2 * H, H).t().contiguous();  // (H, H)
  T* hp = h.data_ptr<T>();
  T* xwp = xw.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const int64_t off = t * B * H;
    T* hr = rm ? (keep ? hr_all.data_ptr<T>() + off : hr_tmp.data_ptr<T>()) : hp;
    if (keep) std::memcpy(hin_all.data_ptr<T>() + off, hp, sizeof(T) * B * H);
    if (rm) {
      for (int64_t k = 0; k < B * H; ++k) hr[k] = hp[k] * rm[k];
    }
    T* aux = keep ? aux_all.data_ptr<T>() + off : aux_tmp.data_ptr<T>();
    at::mm_out(rec, at::from_blob(hr, {B, H}, opts), w_t);
    T* g = xwp + t * B * 3 * H;
    T* o_t = out.data_ptr<T>() + off;
    T* recp = rec.data_ptr<T>();
    const int64_t G = rec.size(1);
    at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* gb = g + b * 3 * H;
        T* rb = recp + b * G;
        const T* hb = hp + b * H;
        if (reset_after) {
          for (int64_t j = 0; j < H; ++j) {
            const T bn = bh ? bh[2 * H + j] : T(0);
            const T r = sigmoid(gb[j] + rb[j] + (bh ? bh[j] : T(0)));
            const T z = sigmoid(gb[H + j] + rb[H + j] + (bh ? bh[H + j] : T(0)));
            const T rn = rb[2 * H + j] + bn;
            const T n = tanh_f(gb[2 * H + j] + r * rn);
            gb[j] = r; gb[H + j] = z; gb[2 * H + j] = n;
            aux[b * H + j] = rn;
            o_t[b * H + j] = n + z * (hb[j] - n);
          }
        } else {
          for (int64_t j = 0; j < 2 * H; ++j) gb[j] = sigmoid(gb[j] + rb[j]);
          for (int64_t j = 0; j < H; ++j) aux[b * H + j] = gb[j] * hr[b * H + j];  // r ⊙ hr
        }
      }
    });
    if (!reset_after) {
      at::mm_out(nrec, at::from_blob(aux, {B, H}, opts), wn_t);
      T* np = nrec.data_ptr<T>();
      at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          T* gb = g + b * 3 * H;
          const T* hb = hp + b * H;
          for (int64_t j = 0; j < H; ++j) {
            const T n = tanh_f(gb[2 * H + j] + np[b * H + j]);
            const T z = gb[H + j];
            gb[2 * H + j] = n;
            o_t[b * H + j] = n + z * (hb[j] - n);
          }
        }
      });
    }
    const T* zh_t = zhp ? zhp + off : nullptr;
    for (int64_t b = 0; b < B; ++b) {  // zoneout, lengths, the new state
      const int64_t r = b * H;
      state_row_forward(o_t + r, hp + r, zh_t ? zh_t + r : nullptr, vd ? vd[t * B + b] : T(1), H);
    }
  }
  if (!keep) return {{"out", out}, {"h", h}};
  return {{"out", out}, {"h", h}, {"hin", hin_all}, {"hr", rm ? hr_all : hin_all}, {"aux", aux_all}};
}

// Backward. Returns dxw (T, B, 3H) = the gradient of the input projection, drec (T, B, 3H) =
// of the recurrent GEMM outputs (reset_after: h W_hhᵀ + b_hh; reset_before: the same tensor
// as dxw) and dh_0.
template <typename T>
Named gru_backward_impl(c10::optional<Tensor> dout, Tensor dhT, Tensor gates, Tensor hin_all,
                                      Tensor hr_all, Tensor aux_all, Tensor w_hh, c10::optional<Tensor> rmask,
                                      c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reset_after,
                                      bool reverse) {
  const int64_t Tn = gates.size(0), B = gates.size(1), H = dhT.size(1);
  auto opts = gates.options();
  Tensor dxw = at::empty({Tn, B, 3 * H}, opts);
  Tensor drec = reset_after ? at::empty({Tn, B, 3 * H}, opts) : dxw;
  Tensor dh_part = dhT.clone();
  Tensor dh_gemm = at::zeros({B, H}, opts);
  Tensor work = at::empty({B, H}, opts);
  Tensor drh = reset_after ? Tensor() : at::empty({B, H}, opts);  // gradient of r ⊙ hr
  Tensor w_rz = reset_after ? Tensor() : w_hh.narrow(0, 0, 2 * H);
  Tensor w_n = reset_after ? Tensor() : w_hh.narrow(0, 2 * H, H);
  const T* dop = ptr_or_null<T>(dout);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  T* dhp = dh_part.data_ptr<T>();
  T* dhg = dh_gemm.data_ptr<T>();
  T* dhw = work.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * H;
    const T* g = gates.data_ptr<T>() + t * B * 3 * H;
    T* dg = dxw.data_ptr<T>() + t * B * 3 * H;
    T* dr = drec.data_ptr<T>() + t * B * 3 * H;
    const T* hin = hin_all.data_ptr<T>() + off;
    const T* hr = hr_all.data_ptr<T>() + off;
    const T* aux = aux_all.data_ptr<T>() + off;
    const T* do_t = dop ? dop + off : nullptr;
    const T* zh_t = zhp ? zhp + off : nullptr;
    at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        const T v = vd ? vd[t * B + b] : T(1);
        T* dh = dhw + r;
        T* dgb = dg + b * 3 * H;
        if (!state_row_backward(dh, dhp + r, dhg + r, rm ? rm + r : nullptr, do_t ? do_t + r : nullptr,
                                zh_t ? zh_t + r : nullptr, v, H)) {
          std::fill(dgb, dgb + 3 * H, T(0));
          if (reset_after) std::fill(dr + b * 3 * H, dr + (b + 1) * 3 * H, T(0));
          continue;
        }
        const T* gb = g + b * 3 * H;
        T* drb = dr + b * 3 * H;
        for (int64_t j = 0; j < H; ++j) {
          const T z = gb[H + j], n = gb[2 * H + j];
          const T dn_a = dh[j] * (T(1) - z) * (T(1) - n * n);
          dgb[H + j] = dh[j] * (hin[r + j] - n) * z * (T(1) - z);
          dgb[2 * H + j] = dn_a;
          dhp[r + j] += dh[j] * z;
          if (reset_after) {
            const T rg = gb[j];
            const T dr_a = dn_a * aux[r + j] * rg * (T(1) - rg);
            dgb[j] = dr_a;
            drb[j] = dr_a;
            drb[H + j] = dgb[H + j];
            drb[2 * H + j] = dn_a * rg;
          }
        }
      }
    });
    if (reset_after) {
      at::mm_out(dh_gemm, at::from_blob(dr, {B, 3 * H}, opts), w_hh);
      continue;
    }
    // reset_before: d(r ⊙ hr) = dn_a W_hn, then dr, then dhr = d(r,z)_a W_rz + d(r ⊙ hr) ⊙ r
    at::mm_out(drh, at::from_blob(dg + 2 * H, {B, H}, {3 * H, 1}, opts), w_n);
    const T* drhp = drh.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      if (vd && vd[t * B + b] == T(0)) continue;  // (its dxw row is zero already)
      const T* gb = g + b * 3 * H;
      T* dgb = dg + b * 3 * H;
      for (int64_t j = 0; j < H; ++j) {
        const T rg = gb[j];
        dgb[j] = drhp[b * H + j] * hr[b * H + j] * rg * (T(1) - rg);
      }
    }
    at::mm_out(dh_gemm, at::from_blob(dg, {B, 2 * H}, {3 * H, 1}, opts), w_rz);
    for (int64_t b = 0; b < B; ++b) {
      if (vd && vd[t * B + b] == T(0)) {
        std::fill(dhg + b * H, dhg + (b + 1) * H, T(0));
        continue;
      }
      const T* gb = g + b * 3 * H;
      for (int64_t j = 0; j < H; ++j) dhg[b * H + j] += drhp[b * H + j] * gb[j];
    }
  }
  Tensor dh0 = rm ? dh_part.add(dh_gemm.mul(*rmask)) : dh_part.add(dh_gemm);
  return {{"dxw", dxw}, {"drec", drec}, {"dh0", dh0}};
}

}  // namespace

Named gru_forward(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh, c10::optional<Tensor> rmask,
                     c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reset_after, bool reverse,
                     bool keep) {
  for (auto* p : {&xw, &h0, &w_hh}) check(*p, "argument", xw);
  check_opt(b_hh, "bias_hh", xw); check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout", xw);
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return gru_forward_impl<float>(xw, h0, w_hh, b_hh, rmask, valid, zh, reset_after, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native GRU: float32 or float64 only");
  return gru_forward_impl<double>(xw, h0, w_hh, b_hh, rmask, valid, zh, reset_after, reverse, keep);
}

Named gru_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor w_hh,
                   c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                   bool reset_after, bool reverse) {
  const Tensor &gates = entry(saved, "gates"), &hin_all = entry(saved, "hin"), &hr_all = entry(saved, "hr"),
               &aux_all = entry(saved, "aux");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dhT, &gates, &hin_all, &hr_all, &aux_all, &w_hh}) check(*p, "argument", gates);
  check_opt(dout, "dout", gates); check_opt(rmask, "rmask", gates); check_opt(valid, "valid", gates);
  check_opt(zh, "zoneout", gates);
  at::NoGradGuard no_grad;
  if (gates.scalar_type() == at::kFloat)
    return gru_backward_impl<float>(dout, dhT, gates, hin_all, hr_all, aux_all, w_hh, rmask, valid, zh,
                                    reset_after, reverse);
  return gru_backward_impl<double>(dout, dhT, gates, hin_all, hr_all, aux_all, w_hh, rmask, valid, zh, reset_after,
                                   reverse);
}

}  // namespace rnnkit_native
