// rnnkit's native LSTM time loop (rnnkit/cells/lstm.py: sigmoid/tanh, peepholes, projection,
// layer norm): the forward and the hand-written BPTT. Entry points and shapes: common.h.

#include "common.h"
#include "gemm.h"

namespace rnnkit_native {
namespace {

// One row (one sequence) of the forward step: the gates g (4H, pre-activations in,
// activations out), the previous cell c, peepholes pp (3H) → c_new, tanh(c_new), h_new.
// Branch-free so that it vectorizes; PEEP is a template argument for the same reason.
template <typename T, bool PEEP>
inline void forward_row(T* __restrict g, const T* __restrict c, const T* __restrict pp, T* __restrict cn_out,
                        T* __restrict tc_out, T* __restrict h_out, int64_t H) {
  // (the gate math is written out here and in forward_row_ln rather than shared through a
  // helper: GCC vectorizes these loops only with the stores to g in the loop body itself)
  for (int64_t j = 0; j < H; ++j) {
    const T c_prev = c[j];
    T ai = g[j], af = g[H + j], ao = g[3 * H + j];
    if (PEEP) {
      ai += pp[j] * c_prev;
      af += pp[H + j] * c_prev;
    }
    const T i = sigmoid(ai), f = sigmoid(af), gg = tanh_f(g[2 * H + j]);
    const T cn = f * c_prev + i * gg;
    if (PEEP) ao += pp[2 * H + j] * cn;
    const T o = sigmoid(ao);
    const T tcv = tanh_f(cn);
    g[j] = i; g[H + j] = f; g[2 * H + j] = gg; g[3 * H + j] = o;
    cn_out[j] = cn;
    tc_out[j] = tcv;
    h_out[j] = o * tcv;
  }
}

// One row of the backward step: dh, dc reach the new state (after the engine's zoneout and
// lengths handling); writes dgates (4H) and adds dc_{t-1} into dc_prev. With peepholes it
// also adds the row's share of their gradients into acc_p (3H): di_a ⊙ c_{t-1},
// df_a ⊙ c_{t-1}, do_a ⊙ c_t (cn, c_t before zoneout and lengths).
template <typename T, bool PEEP>
inline void backward_row(const T* __restrict g, const T* __restrict c_prev, const T* __restrict cn,
                         const T* __restrict tc, const T* __restrict dh, const T* __restrict dc,
                         const T* __restrict pp, T* __restrict dg, T* __restrict dc_prev, T* __restrict acc_p,
                         int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const T i = g[j], f = g[H + j], gg = g[2 * H + j], o = g[3 * H + j];
    const T tcv = tc[j];
    const T do_a = dh[j] * tcv * o * (T(1) - o);
    T dct = dh[j] * o * (T(1) - tcv * tcv) + dc[j];
    if (PEEP) dct += pp[2 * H + j] * do_a;
    const T di_a = dct * gg * i * (T(1) - i);
    const T df_a = dct * c_prev[j] * f * (T(1) - f);
    const T dg_a = dct * i * (T(1) - gg * gg);
    T dcp = dct * f;
    if (PEEP) {
      dcp += pp[j] * di_a + pp[H + j] * df_a;
      acc_p[j] += di_a * c_prev[j];
      acc_p[H + j] += df_a * c_prev[j];
      acc_p[2 * H + j] += do_a * cn[j];
    }
    dg[j] = di_a; dg[H + j] = df_a; dg[2 * H + j] = dg_a; dg[3 * H + j] = do_a;
    dc_prev[j] += dcp;
  }
}

// (row_moments, the one-pass layer-norm statistics of a row: common.h)

// The layer-norm LSTM's forward step for one row (rnnkit/cells/lstm.py with layer_norm),
// the statistics riding along the gate pass: pass 1 the moments of rec, the row's recurrent
// GEMM output (4H); pass 2, per unit, â_h = (rec - μ)/σ (kept), the gates
// g + γ_h ⊙ â_h → i, f, g, o, c' and the shifted sums of c'; pass 3 â_c (kept) and
// h' = o ⊙ tanh(γ_c ⊙ â_c + β_c). g (4H) holds LN(x W_ihᵀ; γ_x) + b on entry and the
// activations on exit.
template <typename T, bool PEEP>
inline void forward_row_ln(T* __restrict g, const T* __restrict rec, const T* __restrict c,
                           const T* __restrict pp, const T* __restrict gam_h, const T* __restrict gam_c,
                           const T* __restrict beta_c, T* __restrict xh, T* __restrict rstd_h, T* __restrict xc,
                           T* __restrict rstd_c, T* __restrict cn_out, T* __restrict tc_out, T* __restrict h_out,
                           int64_t H) {
  T mh, rh;
  row_moments(rec, 4 * H, mh, rh);
  *rstd_h = rh;
  // the shift of c''s sums: c'_0, the row's first entry, computed ahead (the same formula)
  T Kc;
  {
    const T x0 = (rec[0] - mh) * rh, x1 = (rec[H] - mh) * rh, x2 = (rec[2 * H] - mh) * rh;
    T ai = g[0] + gam_h[0] * x0, af = g[H] + gam_h[H] * x1;
    if (PEEP) {
      ai += pp[0] * c[0];
      af += pp[H] * c[0];
    }
    Kc = sigmoid(af) * c[0] + sigmoid(ai) * tanh_f(g[2 * H] + gam_h[2 * H] * x2);
  }
  T s1 = T(0), s2 = T(0);
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < H; ++j) {
    const T c_prev = c[j];
    const T xi = (rec[j] - mh) * rh, xf = (rec[H + j] - mh) * rh;
    const T xg = (rec[2 * H + j] - mh) * rh, xo = (rec[3 * H + j] - mh) * rh;
    xh[j] = xi; xh[H + j] = xf; xh[2 * H + j] = xg; xh[3 * H + j] = xo;
    T ai = g[j] + gam_h[j] * xi, af = g[H + j] + gam_h[H + j] * xf;
    const T ag = g[2 * H + j] + gam_h[2 * H + j] * xg;
    T ao = g[3 * H + j] + gam_h[3 * H + j] * xo;
    if (PEEP) {
      ai += pp[j] * c_prev;
      af += pp[H + j] * c_prev;
    }
    const T i = sigmoid(ai), f = sigmoid(af), gg = tanh_f(ag);
    const T cn = f * c_prev + i * gg;
    if (PEEP) ao += pp[2 * H + j] * cn;
    g[j] = i; g[H + j] = f; g[2 * H + j] = gg; g[3 * H + j] = sigmoid(ao);
    cn_out[j] = cn;
    const T d = cn - Kc;
    s1 += d;
    s2 += d * d;
  }
  const T m = s1 / T(H);
  const T mc = Kc + m;
  const T rc = T(1) / std::sqrt(std::max(s2 / T(H) - m * m, T(0)) + T(1e-5));
  *rstd_c = rc;
  for (int64_t j = 0; j < H; ++j) {
    const T x = (cn_out[j] - mc) * rc;
    xc[j] = x;
    const T tcv = tanh_f(gam_c[j] * x + beta_c[j]);
    tc_out[j] = tcv;
    h_out[j] = g[3 * H + j] * tcv;
  }
}

// Its backward for one row, the layer norms' row reductions fused with the gate backward
// (tanh(LN(c')) recomputed from â_c, γ_c, β_c rather than kept). With ĝ = γ ⊙ dy, LN's
// backward is da = (ĝ - mean(ĝ) - â ⊙ mean(ĝ ⊙ â)) / σ:
//   pass 1 (H): dcln = d LN(c') and do_a, with the sums of ĝ_c, ĝ_c ⊙ â_c, and adds
//     dcln ⊙ â_c, dcln into the row's dγ_c, dβ_c accumulators;
//   pass 2 (H): d c' from them, the gate backward → dgates (4H), dc_{t-1} added into
//     dc_prev, with the sums of ĝ_h, ĝ_h ⊙ â_h, and dgates ⊙ â_h added into dγ_h;
//   pass 3 (4H): drec, the gradient of the raw recurrent GEMM output.
// dcln_tmp is scratch (H); acc_gh (4H), acc_gc, acc_bc (H) the row's parameter-gradient sums.
template <typename T, bool PEEP>
inline void backward_row_ln(const T* __restrict g, const T* __restrict c_prev, const T* __restrict beta_c,
                            const T* __restrict xh, T rstd_h, const T* __restrict xc, T rstd_c,
                            const T* __restrict dh, const T* __restrict dc, const T* __restrict pp,
                            const T* __restrict gam_h, const T* __restrict gam_c, T* __restrict dg,
                            T* __restrict drec, T* __restrict dcln_tmp, T* __restrict dc_prev,
                            T* __restrict acc_gh, T* __restrict acc_gc, T* __restrict acc_bc, int64_t H) {
  T s1c = T(0), s2c = T(0);
#pragma omp simd reduction(+ : s1c, s2c)
  for (int64_t j = 0; j < H; ++j) {
    const T o = g[3 * H + j];
    const T x = xc[j];
    const T tcv = tanh_f(gam_c[j] * x + beta_c[j]);  // tanh(LN(c')), recomputed
    const T dl = dh[j] * o * (T(1) - tcv * tcv);
    dcln_tmp[j] = dl;
    dg[3 * H + j] = dh[j] * tcv * o * (T(1) - o);  // do_a
    acc_gc[j] += dl * x;
    acc_bc[j] += dl;
    const T gh = gam_c[j] * dl;
    s1c += gh;
    s2c += gh * x;
  }
  s1c /= T(H);
  s2c /= T(H);
  T s1h = T(0), s2h = T(0);
#pragma omp simd reduction(+ : s1h, s2h)
  for (int64_t j = 0; j < H; ++j) {
    const T i = g[j], f = g[H + j], gg = g[2 * H + j];
    const T do_a = dg[3 * H + j];
    T dct = (gam_c[j] * dcln_tmp[j] - s1c - xc[j] * s2c) * rstd_c + dc[j];  // d c' + dc
    if (PEEP) dct += pp[2 * H + j] * do_a;
    const T di_a = dct * gg * i * (T(1) - i);
    const T df_a = dct * c_prev[j] * f * (T(1) - f);
    const T dg_a = dct * i * (T(1) - gg * gg);
    T dcp = dct * f;
    if (PEEP) dcp += pp[j] * di_a + pp[H + j] * df_a;
    dg[j] = di_a; dg[H + j] = df_a; dg[2 * H + j] = dg_a;
    dc_prev[j] += dcp;
    const T xi = xh[j], xf = xh[H + j], xg = xh[2 * H + j], xo = xh[3 * H + j];
    acc_gh[j] += di_a * xi; acc_gh[H + j] += df_a * xf; acc_gh[2 * H + j] += dg_a * xg; acc_gh[3 * H + j] += do_a * xo;
    const T gi = gam_h[j] * di_a, gf = gam_h[H + j] * df_a, gq = gam_h[2 * H + j] * dg_a, go = gam_h[3 * H + j] * do_a;
    s1h += (gi + gf) + (gq + go);
    s2h += (gi * xi + gf * xf) + (gq * xg + go * xo);
  }
  s1h /= T(4 * H);
  s2h /= T(4 * H);
  for (int64_t j = 0; j < 4 * H; ++j) drec[j] = (gam_h[j] * dg[j] - s1h - xh[j] * s2h) * rstd_h;
}

// Forward. xw (T, B, 4H) holds x W_ihᵀ + b and is overwritten with the activated gates
// (i, f, g, o) that the backward reads. The output h has P = proj_size units (P = H without
// projection: h = o ⊙ tanh(c'); with it h = W_hr (o ⊙ tanh(c')) and W_hh is (4H, P)).
// Returns out (T, B, P), h_T, c_T and, when keep, hr (T, B, P) = the GEMM's input
// h_{t-1} ⊙ mask, c_in (T, B, H) = c_{t-1}, c_new (T, B, H) = c_t before zoneout/lengths,
// tc (T, B, H) = tanh of c_t (of LN(c_t)), then with layer norm â and 1/σ of the recurrent
// projection and of c_t, then with projection h_full (T, B, H) = o ⊙ tanh(...).
template <typename T>
Named forward_impl(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                                 c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                                 c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                 c10::optional<Tensor> zc, const c10::optional<Tensor>& ln_gamma_h,
                                 const c10::optional<Tensor>& ln_gamma_c, const c10::optional<Tensor>& ln_beta_c,
                                 bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = c0.size(1), P = h0.size(1);
  auto opts = xw.options();
  const T* gam_h = ptr_or_null<T>(ln_gamma_h);
  const T* gam_c = ptr_or_null<T>(ln_gamma_c);
  const T* beta_c = ptr_or_null<T>(ln_beta_c);
  const bool LN = gam_h != nullptr;
  const bool PROJ = w_hr.has_value() && w_hr->defined();
  Tensor out = at::empty({Tn, B, P}, opts);
  Tensor h = h0.clone(), c = c0.clone();
  Tensor hr_all, cin_all, cnew_all, tc_all, hf_all;
  // c_{t-1} is kept per step only where zoneout or lengths make it differ from the previous
  // step's c_new; otherwise cin holds c_0 alone. With layer norm tanh(LN(c_t)) is recomputed
  // in the backward from â_c, so tc is one step of scratch.
  const bool keep_cin = zc.has_value() || valid.has_value();
  if (keep) {
    hr_all = at::empty({Tn, B, P}, opts);
    cin_all = keep_cin ? at::empty({Tn, B, H}, opts) : c0.unsqueeze(0).clone();
    cnew_all = at::empty({Tn, B, H}, opts);
    tc_all = at::empty({LN ? 1 : Tn, B, H}, opts);
  }
  if (PROJ) hf_all = at::empty({keep ? Tn : 1, B, H}, opts);
  Tensor scratch = keep ? Tensor() : at::empty({2, B, H}, opts);  // c_new, tanh(c_new)
  // layer norm: the raw recurrent GEMM output, and â, 1/σ of it and of c' (per step if kept)
  Tensor rec, xh_all, rh_all, xc_all, rc_all;
  if (LN) {
    rec = at::empty({B, 4 * H}, opts);
    const int64_t steps = keep ? Tn : 1;
    xh_all = at::empty({steps, B, 4 * H}, opts);
    rh_all = at::empty({steps, B}, opts);
    xc_all = at::empty({steps, B, H}, opts);
    rc_all = at::empty({steps, B}, opts);
  }
  Tensor hr_tmp = (rmask.has_value() && !keep) ? at::empty({B, P}, opts) : Tensor();
  // the recurrent product hr W_hhᵀ: with layer norm into rec through ATen (w_t (P, 4H), a plain
  // row-major operand); without, accumulated onto the step's gates by BLAS with W_hh packed once
  Tensor w_t = LN ? w_hh.t().contiguous() : Tensor();
  const WeightGemm<T> rec_gemm = LN ? WeightGemm<T>() : WeightGemm<T>(w_hh, 0, 4 * H, P, P, B);
  Tensor w_hr_t = PROJ ? w_hr->t().contiguous() : Tensor();   // (H, P)
  const T* pp = ptr_or_null<T>(peep);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* zcp = ptr_or_null<T>(zc);
  T* hp = h.data_ptr<T>();
  T* cp = c.data_ptr<T>();
  T* xwp = xw.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const int64_t off = t * B * H, offp = t * B * P;
    T* hr = hp;
    if (keep) {
      hr = hr_all.data_ptr<T>() + offp;
      if (rm) {
        for (int64_t k = 0; k < B * P; ++k) hr[k] = hp[k] * rm[k];
      } else {
        std::memcpy(hr, hp, sizeof(T) * B * P);
      }
      if (keep_cin) std::memcpy(cin_all.data_ptr<T>() + off, cp, sizeof(T) * B * H);
    } else if (rm) {
      hr = hr_tmp.data_ptr<T>();
      for (int64_t k = 0; k < B * P; ++k) hr[k] = hp[k] * rm[k];
    }
    T* g = xwp + t * B * 4 * H;
    if (LN) {  // rec = hr W_hhᵀ, normalized per row below
      at::mm_out(rec, at::from_blob(hr, {B, P}, opts), w_t);
    } else {
      rec_gemm(g, 4 * H, hr, P, T(1));  // gates = xw_t + hr W_hhᵀ
    }
    const int64_t ls = keep ? t : 0;  // the per-step slot of this step's kept values
    T* xh_t = LN ? xh_all.data_ptr<T>() + ls * B * 4 * H : nullptr;
    T* rh_t = LN ? rh_all.data_ptr<T>() + ls * B : nullptr;
    T* xc_t = LN ? xc_all.data_ptr<T>() + ls * B * H : nullptr;
    T* rc_t = LN ? rc_all.data_ptr<T>() + ls * B : nullptr;
    const T* recp = LN ? rec.data_ptr<T>() : nullptr;
    T* o_t = out.data_ptr<T>() + offp;
    T* hn_t = PROJ ? hf_all.data_ptr<T>() + ls * B * H : o_t;  // o ⊙ tanh(...), (B, H)
    T* cn_t = keep ? cnew_all.data_ptr<T>() + off : scratch.data_ptr<T>();
    T* tc_t = keep ? tc_all.data_ptr<T>() + (LN ? 0 : off) : scratch.data_ptr<T>() + B * H;
    const T* zh_t = zhp ? zhp + offp : nullptr;
    const T* zc_t = zcp ? zcp + off : nullptr;
    at::parallel_for(0, B, grain(8 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        if (LN && pp) {
          forward_row_ln<T, true>(g + b * 4 * H, recp + b * 4 * H, cp + r, pp, gam_h, gam_c, beta_c,
                                  xh_t + b * 4 * H, rh_t + b, xc_t + r, rc_t + b, cn_t + r, tc_t + r, hn_t + r, H);
        } else if (LN) {
          forward_row_ln<T, false>(g + b * 4 * H, recp + b * 4 * H, cp + r, pp, gam_h, gam_c, beta_c,
                                   xh_t + b * 4 * H, rh_t + b, xc_t + r, rc_t + b, cn_t + r, tc_t + r, hn_t + r, H);
        } else if (pp) {
          forward_row<T, true>(g + b * 4 * H, cp + r, pp, cn_t + r, tc_t + r, hn_t + r, H);
        } else {
          forward_row<T, false>(g + b * 4 * H, cp + r, pp, cn_t + r, tc_t + r, hn_t + r, H);
        }
        if (vd && vd[t * B + b] == T(0)) continue;  // past its length: the state stays
        if (zc_t) {  // zoneout: lerp(new, old, z)
          for (int64_t j = 0; j < H; ++j) cp[r + j] = cn_t[r + j] + zc_t[r + j] * (cp[r + j] - cn_t[r + j]);
        } else {
          std::memcpy(cp + r, cn_t + r, sizeof(T) * H);
        }
      }
    });
    if (PROJ) {  // h = (o ⊙ tanh(...)) W_hrᵀ
      std::fill(o_t, o_t + B * P, T(0));
      step_gemm<T>(o_t, hn_t, w_hr_t, B, H, P, opts);
    }
    for (int64_t b = 0; b < B; ++b) {  // the new h: lengths, zoneout
      const int64_t r = b * P;
      state_row_forward(o_t + r, hp + r, zh_t ? zh_t + r : nullptr, vd ? vd[t * B + b] : T(1), P);
    }
  }
  if (!keep) return {{"out", out}, {"h", h}, {"c", c}};
  Named res = {{"out", out}, {"h", h}, {"c", c}, {"hr", hr_all}, {"c_in", cin_all}, {"c_new", cnew_all},
               {"tc", tc_all}};
  if (LN) res.insert({{"ln_xhat_h", xh_all}, {"ln_rstd_h", rh_all}, {"ln_xhat_c", xc_all}, {"ln_rstd_c", rc_all}});
  if (PROJ) res.emplace("h_full", hf_all);
  return res;
}

// Backward. Returns dgates (T, B, 4H) = d(x W_ihᵀ + b) (= d(h W_hhᵀ) without layer norm)
// for every step, dh_0 and dc_0, then with layer norm drec (T, B, 4H) = d(h W_hhᵀ) and the
// gradients of γ_h, γ_c, β_c (summed per row in the loop, over the rows at the end), then
// with projection dh (T, B, P) = the gradient reaching the projected h (dW_hr = Σ dhᵀ
// h_full). The binding (cells/lstm.py) forms dW_hh, the bias and peephole gradients from
// these with one reduction or GEMM each.
template <typename T>
Named backward_impl(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved, Tensor w_hh, c10::optional<Tensor> w_hr,
                                  c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                                  c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                  c10::optional<Tensor> zc, const c10::optional<Tensor>& ln_gamma_h,
                                  const c10::optional<Tensor>& ln_gamma_c, const c10::optional<Tensor>& ln_beta_c,
                                  bool reverse) {
  const Tensor& gates = entry(saved, "gates");
  const Tensor& cin_all = entry(saved, "c_in");
  const Tensor& cnew_all = entry(saved, "c_new");
  const Tensor& tc_all = entry(saved, "tc");
  const T* gam_h = ptr_or_null<T>(ln_gamma_h);
  const T* gam_c = ptr_or_null<T>(ln_gamma_c);
  const T* beta_c = ptr_or_null<T>(ln_beta_c);
  const bool LN = gam_h != nullptr;
  const Tensor xh_s = LN ? entry(saved, "ln_xhat_h") : Tensor(), rh_s = LN ? entry(saved, "ln_rstd_h") : Tensor();
  const Tensor xc_s = LN ? entry(saved, "ln_xhat_c") : Tensor(), rc_s = LN ? entry(saved, "ln_rstd_c") : Tensor();
  const int64_t Tn = gates.size(0), B = gates.size(1), H = dcT.size(1), P = dhT.size(1);
  auto opts = gates.options();
  const bool PROJ = w_hr.has_value() && w_hr->defined();
  Tensor dgates = at::empty({Tn, B, 4 * H}, opts);
  // layer norm: the gradient of the raw recurrent GEMM output, scratch for that of LN(c')'s
  // output, and per row the running sums of dγ_h (B, 4H), dγ_c and dβ_c (B, H each): each
  // row is one thread's at a time, so the sums need no lock; summed over B at the end
  Tensor drec_all = LN ? at::empty({Tn, B, 4 * H}, opts) : Tensor();
  Tensor dcn_tmp = LN ? at::empty({B, H}, opts) : Tensor();
  Tensor acc_gh = LN ? at::zeros({B, 4 * H}, opts) : Tensor();
  Tensor acc_c = LN ? at::zeros({2, B, H}, opts) : Tensor();  // dγ_c, dβ_c
  // peepholes without layer norm: per row the running sums of dw_ci, dw_cf, dw_co (B, 3H)
  Tensor acc_p = (peep.has_value() && peep->defined() && !LN) ? at::zeros({B, 3 * H}, opts) : Tensor();
  Tensor dh_part = dhT.clone();              // the part of dh not from the recurrent GEMM
  Tensor dh_gemm = at::zeros({B, P}, opts);  // dgates_{t+1} W_hh (before the dropout mask)
  Tensor dc = dcT.clone();                   // dc reaching the state, then dc_{t-1}
  // dh reaching the step (B, P), per step with projection (for dW_hr), and dc (B, H)
  Tensor dh_all = at::empty({PROJ ? Tn : 1, B, P}, opts);
  Tensor dcw_t = at::empty({B, H}, opts);
  Tensor dhf = PROJ ? at::empty({B, H}, opts) : Tensor();  // W_hrᵀ dh: reaching o ⊙ tanh(...)
  // without layer norm dh_{t-1} = dgates W_hh by BLAS, W_hh (4H, P) packed once
  const WeightGemm<T> back_gemm = LN ? WeightGemm<T>() : WeightGemm<T>(w_hh, 0, P, 4 * H, P, B, false);
  const T* dop = ptr_or_null<T>(dout);
  const T* pp = ptr_or_null<T>(peep);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* zcp = ptr_or_null<T>(zc);
  T* dhp = dh_part.data_ptr<T>();
  T* dhg = dh_gemm.data_ptr<T>();
  T* dcp = dc.data_ptr<T>();
  T* dcw = dcw_t.data_ptr<T>();
  T* dgp = dgates.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * H, offp = t * B * P;
    const T* g = gates.data_ptr<T>() + t * B * 4 * H;
    T* dg = dgp + t * B * 4 * H;
    // c_{t-1}: kept, or c_0 at the first step, or the c_new of the step before
    const int64_t first = reverse ? Tn - 1 : 0;
    const T* ci = cin_all.size(0) == Tn ? cin_all.data_ptr<T>() + off
                  : t == first          ? cin_all.data_ptr<T>()
                                        : cnew_all.data_ptr<T>() + (reverse ? t + 1 : t - 1) * B * H;
    const T* tc_t = LN ? nullptr : tc_all.data_ptr<T>() + off;
    const T* do_t = dop ? dop + offp : nullptr;
    const T* zh_t = zhp ? zhp + offp : nullptr;
    const T* zc_t = zcp ? zcp + off : nullptr;
    T* drec_t = LN ? drec_all.data_ptr<T>() + t * B * 4 * H : nullptr;
    const T* xh_t = LN ? xh_s.data_ptr<T>() + t * B * 4 * H : nullptr;
    const T* rh_t = LN ? rh_s.data_ptr<T>() + t * B : nullptr;
    const T* xc_t = LN ? xc_s.data_ptr<T>() + off : nullptr;
    const T* rc_t = LN ? rc_s.data_ptr<T>() + t * B : nullptr;
    T* dcn_s = LN ? dcn_tmp.data_ptr<T>() : nullptr;
    T* dhw = dh_all.data_ptr<T>() + (PROJ ? offp : 0);
    // 1. the gradients reaching the new state: from step t+1 (dh_part + dh_gemm ⊙ mask), the
    //    output, zoneout (z ⊙ d(new) goes straight to the previous state) and lengths
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = b * P, rc = b * H;
      const T v = vd ? vd[t * B + b] : T(1);
      if (!state_row_backward(dhw + r, dhp + r, dhg + r, rm ? rm + r : nullptr, do_t ? do_t + r : nullptr,
                              zh_t ? zh_t + r : nullptr, v, P)) {
        continue;  // past its length: dcp keeps dc as it is
      }
      state_row_backward(dcw + rc, dcp + rc, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                         static_cast<const T*>(nullptr), zc_t ? zc_t + rc : nullptr, T(1), H);
    }
    // 2. through the projection: d(o ⊙ tanh(...)) = dh W_hr
    const T* dhc = dhw;
    if (PROJ) {
      dhf.zero_();
      step_gemm<T>(dhf.data_ptr<T>(), dhw, *w_hr, B, P, H, opts);
      dhc = dhf.data_ptr<T>();
    }
    // 3. the cell
    at::parallel_for(0, B, grain(8 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        if (vd && vd[t * B + b] == T(0)) {
          std::fill(dg + b * 4 * H, dg + (b + 1) * 4 * H, T(0));
          if (LN) std::fill(drec_t + b * 4 * H, drec_t + (b + 1) * 4 * H, T(0));
          continue;
        }
        const T* dh = dhc + r;
        const T* dcn = dcw + r;
        if (LN && pp) {
          backward_row_ln<T, true>(g + b * 4 * H, ci + r, beta_c, xh_t + b * 4 * H, rh_t[b], xc_t + r, rc_t[b],
                                   dh, dcn, pp, gam_h, gam_c, dg + b * 4 * H, drec_t + b * 4 * H, dcn_s + r, dcp + r,
                                   acc_gh.data_ptr<T>() + b * 4 * H, acc_c.data_ptr<T>() + r, acc_c.data_ptr<T>() + B * H + r, H);
        } else if (LN) {
          backward_row_ln<T, false>(g + b * 4 * H, ci + r, beta_c, xh_t + b * 4 * H, rh_t[b], xc_t + r, rc_t[b],
                                    dh, dcn, pp, gam_h, gam_c, dg + b * 4 * H, drec_t + b * 4 * H, dcn_s + r, dcp + r,
                                    acc_gh.data_ptr<T>() + b * 4 * H, acc_c.data_ptr<T>() + r, acc_c.data_ptr<T>() + B * H + r, H);
        } else if (pp) {
          backward_row<T, true>(g + b * 4 * H, ci + r, cnew_all.data_ptr<T>() + off + r, tc_t + r, dh, dcn, pp,
                                dg + b * 4 * H, dcp + r, acc_p.data_ptr<T>() + b * 3 * H, H);
        } else {
          backward_row<T, false>(g + b * 4 * H, ci + r, nullptr, tc_t + r, dh, dcn, pp, dg + b * 4 * H, dcp + r,
                                 nullptr, H);
        }
      }
    });
    if (LN) {  // dh_{t-1} from the recurrent GEMM (before the mask)
      at::mm_out(dh_gemm, at::from_blob(drec_t, {B, 4 * H}, opts), w_hh);
    } else {
      back_gemm(dhg, P, dg, 4 * H, T(0));
    }
  }
  Tensor dh0 = rm ? dh_part.add(dh_gemm.mul(*rmask)) : dh_part.add(dh_gemm);
  Named res = {{"dgates", dgates}, {"dh0", dh0}, {"dc0", dc}};
  if (LN) {
    Tensor dc_sums = acc_c.sum(1);  // (2, H)
    res.insert({{"drec", drec_all}, {"ln_dgamma_h", acc_gh.sum(0)}, {"ln_dgamma_c", dc_sums[0]},
                {"ln_dbeta_c", dc_sums[1]}});
  }
  if (PROJ) res.emplace("dh", dh_all);
  if (acc_p.defined()) res.emplace("dpeep", acc_p.sum(0).view({3, H}));
  return res;
}

}  // namespace

// The layer-norm parameters: all three or none.
static bool check_ln(const c10::optional<Tensor>& gh, const c10::optional<Tensor>& gc,
                     const c10::optional<Tensor>& bc, const Tensor& like) {
  const bool on = gh.has_value() && gh->defined();
  TORCH_CHECK(on == (gc.has_value() && gc->defined()) && on == (bc.has_value() && bc->defined()),
              "rnnkit native LSTM: layer norm takes ln_gamma_h, ln_gamma_c and ln_beta_c together (or none)");
  check_opt(gh, "ln_gamma_h", like); check_opt(gc, "ln_gamma_c", like); check_opt(bc, "ln_beta_c", like);
  return on;
}

Named lstm_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                                 c10::optional<Tensor> peep,
                                 c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                                 c10::optional<Tensor> zh, c10::optional<Tensor> zc,
                                 c10::optional<Tensor> ln_gamma_h, c10::optional<Tensor> ln_gamma_c,
                                 c10::optional<Tensor> ln_beta_c, bool reverse, bool keep) {
  for (auto* p : {&xw, &h0, &c0, &w_hh}) check(*p, "argument", xw);
  check_opt(w_hr, "weight_hr", xw); check_opt(peep, "peephole", xw); check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout h", xw); check_opt(zc, "zoneout c", xw);
  check_ln(ln_gamma_h, ln_gamma_c, ln_beta_c, xw);
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return forward_impl<float>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_h, ln_gamma_c,
                               ln_beta_c, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native LSTM: float32 or float64 only");
  return forward_impl<double>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_h, ln_gamma_c,
                              ln_beta_c, reverse, keep);
}

Named lstm_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved,
                                  Tensor w_hh, c10::optional<Tensor> w_hr, c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                                  c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                  c10::optional<Tensor> zc, c10::optional<Tensor> ln_gamma_h,
                                  c10::optional<Tensor> ln_gamma_c, c10::optional<Tensor> ln_beta_c, bool reverse) {
  const Tensor& g = entry(saved, "gates");
  for (auto& kv : saved) check(kv.second, kv.first.c_str(), g);
  for (auto* p : {&dhT, &dcT, &w_hh}) check(*p, "argument", g);
  check_opt(dout, "dout", g); check_opt(w_hr, "weight_hr", g); check_opt(peep, "peephole", g); check_opt(rmask, "rmask", g);
  check_opt(valid, "valid", g); check_opt(zh, "zoneout h", g); check_opt(zc, "zoneout c", g);
  check_ln(ln_gamma_h, ln_gamma_c, ln_beta_c, g);
  at::NoGradGuard no_grad;
  if (g.scalar_type() == at::kFloat)
    return backward_impl<float>(dout, dhT, dcT, saved, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_h,
                                ln_gamma_c, ln_beta_c, reverse);
  return backward_impl<double>(dout, dhT, dcT, saved, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_h,
                               ln_gamma_c, ln_beta_c, reverse);
}

}  // namespace rnnkit_native
