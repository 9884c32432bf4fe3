// rnnkit's native GRU time loop (rnnkit/cells/gru.py, both forms, with or without layer
// norm): the forward and the hand-written BPTT. Entry points and shapes: common.h.
//
//   reset_after:  r, z = σ(x_rz + (h W_hhᵀ + b_hh)_rz),  n = tanh(x_n + r ⊙ (h W_hnᵀ + b_hn))
//   reset_before: r, z = σ(x_rz + h W_rzᵀ),              n = tanh(x_n + (r ⊙ h) W_hnᵀ)
//   h' = n + z ⊙ (h - n)
// (x includes b_ih, and for reset_before also b_hh.) h is masked by the recurrent dropout
// mask before the GEMMs (hr); the state itself is not. With layer norm every recurrent GEMM
// output is normalized with its slice of γ_h before the bias is added (reset_after:
// LN(h W_hhᵀ; γ_h) + b_hh over 3H; reset_before: LN(h W_rzᵀ; γ_rz) over 2H and
// LN((r ⊙ h) W_hnᵀ; γ_n) over H); the statistics come from one pass over the row
// (row_moments) and the normalization rides along the gate pass.

#include "common.h"

namespace rnnkit_native {
namespace {

// Forward. xw (T, B, 3H) is overwritten with r, z, n. Returns out, h_T and, when keep,
// hin (T, B, H) = h_{t-1}, hr (T, B, H) = h_{t-1} ⊙ mask (only with a mask), and
// aux (T, B, H): reset_after the recurrent n pre-activation h W_hnᵀ + b_hn, reset_before r ⊙ hr.
template <typename T>
Named gru_forward_impl(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh,
                                     c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                                     c10::optional<Tensor> zh, const c10::optional<Tensor>& ln_gamma_h,
                                     bool reset_after, bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = h0.size(1);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* bh = ptr_or_null<T>(b_hh);
  const T* gam = ptr_or_null<T>(ln_gamma_h);
  // layer norm: â of the recurrent GEMM outputs (T, B, 3H: [r, z | n]) and 1/σ (T, B, 2:
  // reset_after one row of 3H, kept twice; reset_before the r,z part and the n part)
  Tensor xh_all, rs_all;
  if (gam) {
    xh_all = at::empty({keep ? Tn : 1, B, 3 * H}, opts);
    rs_all = at::empty({keep ? Tn : 1, B, 2}, opts);
  }
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
    const int64_t ls = keep ? t : 0;  // this step's slot of the kept layer-norm values
    T* xh_t = gam ? xh_all.data_ptr<T>() + ls * B * 3 * H : nullptr;
    T* rs_t = gam ? rs_all.data_ptr<T>() + ls * B * 2 : nullptr;
    at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        T* gb = g + b * 3 * H;
        T* rb = recp + b * G;
        const T* hb = hp + b * H;
        if (gam) {  // rec ← γ ⊙ â over the row's G entries, â and 1/σ kept
          T mean, rstd;
          row_moments(rb, G, mean, rstd);
          T* xb = xh_t + b * 3 * H;
          for (int64_t j = 0; j < G; ++j) {
            const T x = (rb[j] - mean) * rstd;
            xb[j] = x;
            rb[j] = gam[j] * x;
          }
          rs_t[b * 2] = rstd;
          rs_t[b * 2 + 1] = rstd;
        }
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
          if (gam) {  // (r ⊙ hr) W_hnᵀ ← γ_n ⊙ â_n
            T mean, rstd;
            T* nb = np + b * H;
            row_moments(nb, H, mean, rstd);
            T* xb = xh_t + b * 3 * H + 2 * H;
            for (int64_t j = 0; j < H; ++j) {
              const T x = (nb[j] - mean) * rstd;
              xb[j] = x;
              nb[j] = gam[2 * H + j] * x;
            }
            rs_t[b * 2 + 1] = rstd;
          }
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
  Named res = {{"out", out}, {"h", h}, {"hin", hin_all}, {"hr", rm ? hr_all : hin_all}, {"aux", aux_all}};
  if (gam) res.insert({{"ln_xhat_h", xh_all}, {"ln_rstd_h", rs_all}});
  return res;
}

// Backward. Returns dxw (T, B, 3H) = the gradient of the input projection, drec (T, B, 3H) =
// of the recurrent GEMM outputs (reset_after: h W_hhᵀ (+ b_hh without layer norm);
// reset_before: the r,z GEMM output and (r ⊙ hr) W_hnᵀ, without layer norm the same tensor
// as dxw) and dh_0; with layer norm also ln_dgamma_h (3H) = Σ d(LN output) ⊙ â and, for
// reset_after, dbias_hh (3H) = Σ d(LN(h W_hhᵀ) + b_hh) (the bias is added after the norm).
template <typename T>
Named gru_backward_impl(c10::optional<Tensor> dout, Tensor dhT, Tensor gates, Tensor hin_all,
                                      Tensor hr_all, Tensor aux_all, Tensor w_hh, c10::optional<Tensor> rmask,
                                      c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                      const c10::optional<Tensor>& ln_gamma_h, const Tensor& xh_all,
                                      const Tensor& rs_all, bool reset_after, bool reverse) {
  const int64_t Tn = gates.size(0), B = gates.size(1), H = dhT.size(1);
  auto opts = gates.options();
  const T* gam = ptr_or_null<T>(ln_gamma_h);
  Tensor dxw = at::empty({Tn, B, 3 * H}, opts);
  Tensor drec = (reset_after || gam) ? at::empty({Tn, B, 3 * H}, opts) : dxw;
  Tensor dh_part = dhT.clone();
  Tensor dh_gemm = at::zeros({B, H}, opts);
  Tensor work = at::empty({B, H}, opts);
  Tensor drh = reset_after ? Tensor() : at::empty({B, H}, opts);  // gradient of r ⊙ hr
  Tensor w_rz = reset_after ? Tensor() : w_hh.narrow(0, 0, 2 * H);
  Tensor w_n = reset_after ? Tensor() : w_hh.narrow(0, 2 * H, H);
  // layer norm: per row the running sums of dγ_h and (reset_after) of d b_hh, summed over B
  // at the end (each row is one thread's at a time)
  Tensor acc_g = gam ? at::zeros({B, 3 * H}, opts) : Tensor();
  Tensor acc_b = (gam && reset_after) ? at::zeros({B, 3 * H}, opts) : Tensor();
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
    const T* xh_t = gam ? xh_all.data_ptr<T>() + t * B * 3 * H : nullptr;
    const T* rs_t = gam ? rs_all.data_ptr<T>() + t * B * 2 : nullptr;
    at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        const T v = vd ? vd[t * B + b] : T(1);
        T* dh = dhw + r;
        T* dgb = dg + b * 3 * H;
        if (!state_row_backward(dh, dhp + r, dhg + r, rm ? rm + r : nullptr, do_t ? do_t + r : nullptr,
                                zh_t ? zh_t + r : nullptr, v, H)) {
          std::fill(dgb, dgb + 3 * H, T(0));
          if (reset_after || gam) std::fill(dr + b * 3 * H, dr + (b + 1) * 3 * H, T(0));
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
        if (gam && reset_after) {  // through LN(h W_hhᵀ; γ_h) + b_hh
          T* ab = acc_b.data_ptr<T>() + b * 3 * H;
          for (int64_t j = 0; j < 3 * H; ++j) ab[j] += drb[j];
          ln_row_backward(drb, gam, xh_t + b * 3 * H, rs_t[b * 2], drb, acc_g.data_ptr<T>() + b * 3 * H, 3 * H);
        } else if (gam) {  // the n part through LN((r ⊙ hr) W_hnᵀ; γ_n)
          ln_row_backward(dgb + 2 * H, gam + 2 * H, xh_t + b * 3 * H + 2 * H, rs_t[b * 2 + 1], drb + 2 * H,
                          acc_g.data_ptr<T>() + b * 3 * H + 2 * H, H);
        }
      }
    });
    if (reset_after) {
      at::mm_out(dh_gemm, at::from_blob(dr, {B, 3 * H}, opts), w_hh);
      continue;
    }
    // reset_before: d(r ⊙ hr) = dn_raw W_hn, then dr, then dhr = d(r,z)_raw W_rz + d(r ⊙ hr) ⊙ r
    // (dn_raw, d(r,z)_raw: dn_a, d(r,z)_a, through the layer norms if any)
    at::mm_out(drh, at::from_blob(gam ? dr + 2 * H : dg + 2 * H, {B, H}, {3 * H, 1}, opts), w_n);
    const T* drhp = drh.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      if (vd && vd[t * B + b] == T(0)) continue;  // (its dxw and drec rows are zero already)
      const T* gb = g + b * 3 * H;
      T* dgb = dg + b * 3 * H;
      for (int64_t j = 0; j < H; ++j) {
        const T rg = gb[j];
        dgb[j] = drhp[b * H + j] * hr[b * H + j] * rg * (T(1) - rg);
      }
      if (gam) {  // the r,z part through LN(hr W_rzᵀ; γ_rz)
        ln_row_backward(dgb, gam, xh_t + b * 3 * H, rs_t[b * 2], dr + b * 3 * H,
                        acc_g.data_ptr<T>() + b * 3 * H, 2 * H);
      }
    }
    at::mm_out(dh_gemm, at::from_blob(gam ? dr : dg, {B, 2 * H}, {3 * H, 1}, opts), w_rz);
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
  Named res = {{"dxw", dxw}, {"drec", drec}, {"dh0", dh0}};
  if (gam) res.emplace("ln_dgamma_h", acc_g.sum(0));
  if (gam && reset_after) res.emplace("dbias_hh", acc_b.sum(0));
  return res;
}

}  // namespace

Named gru_forward(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> b_hh, c10::optional<Tensor> rmask,
                     c10::optional<Tensor> valid, c10::optional<Tensor> zh, c10::optional<Tensor> ln_gamma_h,
                     bool reset_after, bool reverse, bool keep) {
  for (auto* p : {&xw, &h0, &w_hh}) check(*p, "argument", xw);
  check_opt(b_hh, "bias_hh", xw); check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout", xw); check_opt(ln_gamma_h, "ln_gamma_h", xw);
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return gru_forward_impl<float>(xw, h0, w_hh, b_hh, rmask, valid, zh, ln_gamma_h, reset_after, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native GRU: float32 or float64 only");
  return gru_forward_impl<double>(xw, h0, w_hh, b_hh, rmask, valid, zh, ln_gamma_h, reset_after, reverse, keep);
}

Named gru_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor w_hh,
                   c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      c10::optional<Tensor> ln_gamma_h, bool reset_after, bool reverse) {
  const Tensor &gates = entry(saved, "gates"), &hin_all = entry(saved, "hin"), &hr_all = entry(saved, "hr"),
               &aux_all = entry(saved, "aux");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dhT, &gates, &hin_all, &hr_all, &aux_all, &w_hh}) check(*p, "argument", gates);
  check_opt(dout, "dout", gates); check_opt(rmask, "rmask", gates); check_opt(valid, "valid", gates);
  check_opt(zh, "zoneout", gates); check_opt(ln_gamma_h, "ln_gamma_h", gates);
  const bool LN = ln_gamma_h.has_value() && ln_gamma_h->defined();
  const Tensor xh_all = LN ? entry(saved, "ln_xhat_h") : Tensor(), rs_all = LN ? entry(saved, "ln_rstd_h") : Tensor();
  at::NoGradGuard no_grad;
  if (gates.scalar_type() == at::kFloat)
    return gru_backward_impl<float>(dout, dhT, gates, hin_all, hr_all, aux_all, w_hh, rmask, valid, zh, ln_gamma_h,
                                    xh_all, rs_all, reset_after, reverse);
  return gru_backward_impl<double>(dout, dhT, gates, hin_all, hr_all, aux_all, w_hh, rmask, valid, zh, ln_gamma_h,
                                   xh_all, rs_all, reset_after, reverse);
}

}  // namespace rnnkit_native
