// rnnkit's native layer-norm GRU loop (rnnkit/cells/gru.py with layer_norm, both forms): the
// forward and the hand-written BPTT with every layer norm — of the input projection and of
// the recurrent GEMM output(s) — fused with the gate passes. Entry points and shapes: gru_ln.h.
//
// Nothing normalized is stored: the forward keeps the raw rows (x W_ihᵀ, which the engine
// holds anyway, and the recurrent GEMM outputs, written into their step's slot by the GEMM)
// with μ and 1/σ of each norm per row; the backward recomputes â = (a - μ)/σ, the same
// arithmetic, so the same values. The norms' gains' and the biases' gradients are summed per
// thread in the gate-gradient passes (one 12H row each, in cache) and over the threads at the
// end. The per-step products go through gemm.h (the weight packed once per loop where MKL
// can).

#include "gru_ln.h"

#include "gemm.h"
#include "pool.h"

namespace rnnkit_native {
namespace {

// The per-row statistics kept per step: μ, 1/σ of the input row, of the recurrent row
// (reset_before: its r,z part) and of the n part (reset_before; reset_after the 3H row again).
constexpr int64_t kStats = 6;

// reset_after, one row of the forward step: the moments of the input row x and of the
// recurrent row a (3H each), then per unit x̃ = γ_x ⊙ â_x + b_x, ã = γ_h ⊙ â_h + b_h,
// r, z = σ(x̃ + ã), n = tanh(x̃_n + r ⊙ ã_n) into g and h' into o.
template <typename T>
inline void forward_row_after(const T* __restrict x, const T* __restrict a, const T* __restrict h,
                              const T* __restrict gx, const T* __restrict gh, const T* __restrict bx,
                              const T* __restrict bh, T* __restrict g, T* __restrict st, T* __restrict o,
                              int64_t H) {
  T mx, rx, mh, rh;
  row_moments(x, 3 * H, mx, rx);
  row_moments(a, 3 * H, mh, rh);
  for (int64_t j = 0; j < H; ++j) {
    const T r = sigmoid((gx[j] * ((x[j] - mx) * rx) + bx[j]) + (gh[j] * ((a[j] - mh) * rh) + bh[j]));
    const T z = sigmoid((gx[H + j] * ((x[H + j] - mx) * rx) + bx[H + j]) +
                        (gh[H + j] * ((a[H + j] - mh) * rh) + bh[H + j]));
    const T an = gh[2 * H + j] * ((a[2 * H + j] - mh) * rh) + bh[2 * H + j];
    const T n = tanh_f((gx[2 * H + j] * ((x[2 * H + j] - mx) * rx) + bx[2 * H + j]) + r * an);
    g[j] = r; g[H + j] = z; g[2 * H + j] = n;
    o[j] = n + z * (h[j] - n);
  }
  st[0] = mx; st[1] = rx; st[2] = mh; st[3] = rh; st[4] = mh; st[5] = rh;
}

// reset_before, the r, z half of a row: the moments of x (3H) and of the r,z GEMM row a
// (2H), r, z = σ(x̃_rz + γ_h ⊙ â_rz) into g, r ⊙ hr into aux (the n GEMM's input).
template <typename T>
inline void forward_rz_before(const T* __restrict x, const T* __restrict a, const T* __restrict hr,
                              const T* __restrict gx, const T* __restrict gh, const T* __restrict bx,
                              T* __restrict g, T* __restrict st, T* __restrict aux, int64_t H) {
  T mx, rx, mh, rh;
  row_moments(x, 3 * H, mx, rx);
  row_moments(a, 2 * H, mh, rh);
  for (int64_t j = 0; j < 2 * H; ++j) {
    g[j] = sigmoid((gx[j] * ((x[j] - mx) * rx) + bx[j]) + gh[j] * ((a[j] - mh) * rh));
  }
  for (int64_t j = 0; j < H; ++j) aux[j] = g[j] * hr[j];
  st[0] = mx; st[1] = rx; st[2] = mh; st[3] = rh;
}

// reset_before, the n half: the moments of the n GEMM row (H, at a + 2H), n = tanh(x̃_n +
// γ_h ⊙ â_n) into g and h' into o.
template <typename T>
inline void forward_n_before(const T* __restrict x, const T* __restrict a, const T* __restrict h,
                             const T* __restrict gx, const T* __restrict gh, const T* __restrict bx,
                             T* __restrict g, T* __restrict st, T* __restrict o, int64_t H) {
  const T mx = st[0], rx = st[1];
  T mn, rn;
  row_moments(a + 2 * H, H, mn, rn);
  for (int64_t j = 0; j < H; ++j) {
    const int64_t k = 2 * H + j;
    const T n = tanh_f((gx[k] * ((x[k] - mx) * rx) + bx[k]) + gh[k] * ((a[k] - mn) * rn));
    const T z = g[H + j];
    g[k] = n;
    o[j] = n + z * (h[j] - n);
  }
  st[4] = mn; st[5] = rn;
}

// The parameter-gradient sums of one thread, one row of 12H: dγ_x, dγ_h, db_x, db_h.
template <typename T>
struct Sums {
  T *gx, *gh, *bx, *bh;
  Sums(T* row, int64_t H) : gx(row), gh(row + 3 * H), bx(row + 6 * H), bh(row + 9 * H) {}
};
constexpr int64_t kSumsWidth = 12;  // × H

// reset_after, the backward of one row; dh reaches the new state (after lengths and zoneout).
// With ĝ = γ ⊙ dy a norm's backward is da = (ĝ - mean(ĝ) - â ⊙ mean(ĝ ⊙ â)) / σ:
//   pass 1 (H): the gate backward → dx̃ (into dxw), dã (into drec), dh_{t-1}'s direct part
//     dh ⊙ z (into dhp);
//   pass 2 (3H): the row sums of both norms, dγ_x, dγ_h, db_x, db_h summed;
//   pass 3 (3H): d(x W_ihᵀ) and d(hr W_hhᵀ) from them, in place.
template <typename T>
inline void backward_row_after(const T* __restrict g, const T* __restrict x, const T* __restrict a,
                               const T* __restrict hin, const T* __restrict st, const T* __restrict dh,
                               const T* __restrict gx, const T* __restrict gh, const T* __restrict bh,
                               T* __restrict dxw, T* __restrict drec, T* __restrict dhp, const Sums<T>& acc,
                               int64_t H) {
  const T mx = st[0], rx = st[1], mh = st[2], rh = st[3];
  for (int64_t j = 0; j < H; ++j) {
    const T r = g[j], z = g[H + j], n = g[2 * H + j];
    const T dn_a = dh[j] * (T(1) - z) * (T(1) - n * n);  // dn = dh' ⊙ (1 - z)
    const T dz_a = dh[j] * (hin[j] - n) * z * (T(1) - z);
    const T an = gh[2 * H + j] * ((a[2 * H + j] - mh) * rh) + bh[2 * H + j];
    const T dr_a = dn_a * an * r * (T(1) - r);
    dxw[j] = dr_a; dxw[H + j] = dz_a; dxw[2 * H + j] = dn_a;
    drec[j] = dr_a; drec[H + j] = dz_a; drec[2 * H + j] = dn_a * r;
    dhp[j] += dh[j] * z;
  }
  T* __restrict acc_gx = acc.gx;
  T* __restrict acc_gh = acc.gh;
  T* __restrict acc_bx = acc.bx;
  T* __restrict acc_bh = acc.bh;
  T s1x = T(0), s2x = T(0), s1h = T(0), s2h = T(0);
#pragma omp simd reduction(+ : s1x, s2x, s1h, s2h)
  for (int64_t k = 0; k < 3 * H; ++k) {
    const T dx = dxw[k], da = drec[k];
    const T xx = (x[k] - mx) * rx, xh = (a[k] - mh) * rh;
    acc_gx[k] += dx * xx;
    acc_gh[k] += da * xh;
    acc_bx[k] += dx;
    acc_bh[k] += da;
    const T gdx = gx[k] * dx, gda = gh[k] * da;
    s1x += gdx;
    s2x += gdx * xx;
    s1h += gda;
    s2h += gda * xh;
  }
  s1x /= T(3 * H);
  s2x /= T(3 * H);
  s1h /= T(3 * H);
  s2h /= T(3 * H);
  for (int64_t k = 0; k < 3 * H; ++k) {
    const T xx = (x[k] - mx) * rx, xh = (a[k] - mh) * rh;
    dxw[k] = (gx[k] * dxw[k] - s1x - xx * s2x) * rx;
    drec[k] = (gh[k] * drec[k] - s1h - xh * s2h) * rh;
  }
}

// reset_before, the n half of a row's backward: dz_a, dn_a (into dxw), dh ⊙ z (into dhp), and
// dn_a through LN((r ⊙ hr) W_hnᵀ; γ_n) into drec's n part (dγ_h's n part summed).
template <typename T>
inline void backward_n_before(const T* __restrict g, const T* __restrict a, const T* __restrict hin,
                              const T* __restrict st, const T* __restrict dh, const T* __restrict gh,
                              T* __restrict dxw, T* __restrict drec, T* __restrict dhp, const Sums<T>& acc,
                              int64_t H) {
  const T mn = st[4], rn = st[5];
  for (int64_t j = 0; j < H; ++j) {
    const T z = g[H + j], n = g[2 * H + j];
    dxw[H + j] = dh[j] * (hin[j] - n) * z * (T(1) - z);
    dxw[2 * H + j] = dh[j] * (T(1) - z) * (T(1) - n * n);
    dhp[j] += dh[j] * z;
  }
  const T* __restrict dn = dxw + 2 * H;
  const T* __restrict an = a + 2 * H;
  const T* __restrict gn = gh + 2 * H;
  T* __restrict acc_gn = acc.gh + 2 * H;
  T s1 = T(0), s2 = T(0);
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < H; ++j) {
    const T xh = (an[j] - mn) * rn;
    acc_gn[j] += dn[j] * xh;
    const T gd = gn[j] * dn[j];
    s1 += gd;
    s2 += gd * xh;
  }
  s1 /= T(H);
  s2 /= T(H);
  T* __restrict drn = drec + 2 * H;
  for (int64_t j = 0; j < H; ++j) drn[j] = (gn[j] * dn[j] - s1 - (an[j] - mn) * rn * s2) * rn;
}

// reset_before, the r, z half: dr_a from d(r ⊙ hr) (drh, the n GEMM's backward) into dxw;
// d(r, z)_a through LN(hr W_rzᵀ; γ_rz) into drec's r,z part; the whole dx̃ through the input
// norm into d(x W_ihᵀ), in place (dγ_x, dγ_h's r,z part and db_x summed).
template <typename T>
inline void backward_rz_before(const T* __restrict g, const T* __restrict x, const T* __restrict a,
                               const T* __restrict hr, const T* __restrict drh, const T* __restrict st,
                               const T* __restrict gx, const T* __restrict gh, T* __restrict dxw,
                               T* __restrict drec, const Sums<T>& acc, int64_t H) {
  const T mx = st[0], rx = st[1], mh = st[2], rh = st[3];
  for (int64_t j = 0; j < H; ++j) {
    const T r = g[j];
    dxw[j] = drh[j] * hr[j] * r * (T(1) - r);
  }
  T* __restrict acc_gx = acc.gx;
  T* __restrict acc_gh = acc.gh;
  T* __restrict acc_bx = acc.bx;
  T s1x = T(0), s2x = T(0), s1h = T(0), s2h = T(0);
#pragma omp simd reduction(+ : s1x, s2x, s1h, s2h)
  for (int64_t k = 0; k < 2 * H; ++k) {
    const T dx = dxw[k];
    const T xx = (x[k] - mx) * rx, xh = (a[k] - mh) * rh;
    acc_gx[k] += dx * xx;
    acc_gh[k] += dx * xh;
    acc_bx[k] += dx;
    const T gdx = gx[k] * dx, gda = gh[k] * dx;
    s1x += gdx;
    s2x += gdx * xx;
    s1h += gda;
    s2h += gda * xh;
  }
#pragma omp simd reduction(+ : s1x, s2x)
  for (int64_t k = 2 * H; k < 3 * H; ++k) {
    const T dx = dxw[k];
    const T xx = (x[k] - mx) * rx;
    acc_gx[k] += dx * xx;
    acc_bx[k] += dx;
    const T gdx = gx[k] * dx;
    s1x += gdx;
    s2x += gdx * xx;
  }
  s1x /= T(3 * H);
  s2x /= T(3 * H);
  s1h /= T(2 * H);
  s2h /= T(2 * H);
  for (int64_t k = 0; k < 2 * H; ++k) drec[k] = (gh[k] * dxw[k] - s1h - (a[k] - mh) * rh * s2h) * rh;
  for (int64_t k = 0; k < 3 * H; ++k) dxw[k] = (gx[k] * dxw[k] - s1x - (x[k] - mx) * rx * s2x) * rx;
}

template <typename T>
Named forward_impl(const Tensor& xw, const Tensor& h0, const Tensor& w_hh, const c10::optional<Tensor>& rmask,
                   const c10::optional<Tensor>& valid, const c10::optional<Tensor>& zh, const Tensor& ln_gamma_x,
                   const Tensor& ln_gamma_h, const Tensor& bias_x, const c10::optional<Tensor>& bias_h,
                   bool reset_after, bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = h0.size(1);
  auto opts = xw.options();
  const int64_t steps = keep ? Tn : 1;  // what is kept per step, else one step of scratch
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  Tensor gates = pooled_empty({steps, B, 3 * H}, opts);
  Tensor rec_all = pooled_empty({steps, B, 3 * H}, opts);
  Tensor stats = at::empty({steps, B, kStats}, opts);
  const T* rm = ptr_or_null<T>(rmask);
  Tensor hin_all, hr_all, aux_all;
  if (keep) {
    hin_all = at::empty({Tn, B, H}, opts);
    if (rm) hr_all = at::empty({Tn, B, H}, opts);
  }
  if (!reset_after) aux_all = at::empty({steps, B, H}, opts);  // r ⊙ hr
  Tensor hr_tmp = (rm && !keep) ? at::empty({B, H}, opts) : Tensor();
  Tensor bh_t = bias_h.has_value() && bias_h->defined() ? *bias_h : at::zeros({3 * H}, opts);
  // hr W_hhᵀ (reset_before: the r,z rows), and reset_before (r ⊙ hr) W_hnᵀ
  const WeightGemm<T> rec_gemm(w_hh, 0, reset_after ? 3 * H : 2 * H, H, H, B);
  const WeightGemm<T> n_gemm = reset_after ? WeightGemm<T>() : WeightGemm<T>(w_hh, 2 * H, H, H, H, B);
  const T* gx = ln_gamma_x.data_ptr<T>();
  const T* gh = ln_gamma_h.data_ptr<T>();
  const T* bx = bias_x.data_ptr<T>();
  const T* bh = bh_t.data_ptr<T>();
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  T* hp = h.data_ptr<T>();
  const T* xwp = xw.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const int64_t off = t * B * H, off3 = t * B * 3 * H;
    const int64_t ls = keep ? t : 0;  // the slot of this step's kept values
    if (keep) std::memcpy(hin_all.data_ptr<T>() + off, hp, sizeof(T) * B * H);
    T* hr = hp;
    if (rm) {
      hr = keep ? hr_all.data_ptr<T>() + off : hr_tmp.data_ptr<T>();
      for (int64_t k = 0; k < B * H; ++k) hr[k] = hp[k] * rm[k];
    }
    T* rec = rec_all.data_ptr<T>() + ls * B * 3 * H;
    rec_gemm(rec, 3 * H, hr, H, T(0));  // normalized per row below
    const T* x_t = xwp + off3;
    T* g_t = gates.data_ptr<T>() + ls * B * 3 * H;
    T* st_t = stats.data_ptr<T>() + ls * B * kStats;
    T* o_t = out.data_ptr<T>() + off;
    if (reset_after) {
      at::parallel_for(0, B, grain(8 * H), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = b * H, r3 = b * 3 * H;
          forward_row_after<T>(x_t + r3, rec + r3, hp + r, gx, gh, bx, bh, g_t + r3, st_t + b * kStats, o_t + r, H);
        }
      });
    } else {
      T* aux = aux_all.data_ptr<T>() + ls * B * H;
      at::parallel_for(0, B, grain(6 * H), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = b * H, r3 = b * 3 * H;
          forward_rz_before<T>(x_t + r3, rec + r3, hr + r, gx, gh, bx, g_t + r3, st_t + b * kStats, aux + r, H);
        }
      });
      n_gemm(rec + 2 * H, 3 * H, aux, H, T(0));
      at::parallel_for(0, B, grain(4 * H), [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t r = b * H, r3 = b * 3 * H;
          forward_n_before<T>(x_t + r3, rec + r3, hp + r, gx, gh, bx, g_t + r3, st_t + b * kStats, o_t + r, H);
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
  Named res = {{"out", out}, {"h", h}, {"gates", gates}, {"rec", rec_all}, {"ln_stats", stats},
               {"hin", hin_all}, {"hr", rm ? hr_all : hin_all}};
  if (!reset_after) res.emplace("aux", aux_all);
  return res;
}

template <typename T>
Named backward_impl(const c10::optional<Tensor>& dout, const Tensor& dhT, const Named& saved, const Tensor& w_hh,
                    const c10::optional<Tensor>& rmask, const c10::optional<Tensor>& valid,
                    const c10::optional<Tensor>& zh, const Tensor& ln_gamma_x, const Tensor& ln_gamma_h,
                    const c10::optional<Tensor>& bias_h, bool reset_after, bool reverse) {
  const Tensor& gates = entry(saved, "gates");
  const Tensor& xw_all = entry(saved, "xw");
  const Tensor& rec_all = entry(saved, "rec");
  const Tensor& stats = entry(saved, "ln_stats");
  const Tensor& hin_all = entry(saved, "hin");
  const Tensor& hr_all = entry(saved, "hr");
  const int64_t Tn = gates.size(0), B = gates.size(1), H = dhT.size(1);
  auto opts = gates.options();
  const bool BH = bias_h.has_value() && bias_h->defined();
  Tensor bh_t = BH ? *bias_h : at::zeros({3 * H}, opts);
  Tensor dxw_all = pooled_empty({Tn, B, 3 * H}, opts);
  Tensor drec_all = pooled_empty({Tn, B, 3 * H}, opts);
  // the parameter-gradient sums, one row of 12H per thread (at::get_thread_num() inside
  // parallel_for is below at::get_num_threads())
  const int64_t n_sums = std::max<int64_t>(1, at::get_num_threads());
  Tensor sums = at::zeros({n_sums, kSumsWidth * H}, opts);
  Tensor dh_part = dhT.clone();              // the part of dh not from the recurrent GEMM(s)
  Tensor dh_gemm = at::zeros({B, H}, opts);  // what reaches h_{t-1} through the GEMMs (before the mask)
  Tensor work = at::empty({B, H}, opts);     // dh reaching the step
  Tensor drh = reset_after ? Tensor() : at::empty({B, H}, opts);  // reset_before: d(r ⊙ hr)
  // dh_{t-1} = drec W_hh (reset_before: drec_rz W_rz, and d(r ⊙ hr) = drec_n W_hn)
  const WeightGemm<T> back_gemm(w_hh, 0, H, reset_after ? 3 * H : 2 * H, H, B, false);
  const WeightGemm<T> n_back = reset_after ? WeightGemm<T>() : WeightGemm<T>(w_hh, 2 * H, H, H, H, B, false);
  const T* gx = ln_gamma_x.data_ptr<T>();
  const T* gh = ln_gamma_h.data_ptr<T>();
  const T* bh = bh_t.data_ptr<T>();
  const T* dop = ptr_or_null<T>(dout);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  T* dhp = dh_part.data_ptr<T>();
  T* dhg = dh_gemm.data_ptr<T>();
  T* dhw = work.data_ptr<T>();
  T* sums_p = sums.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * H, off3 = t * B * 3 * H;
    const T* g_t = gates.data_ptr<T>() + off3;
    const T* x_t = xw_all.data_ptr<T>() + off3;
    const T* a_t = rec_all.data_ptr<T>() + off3;
    const T* st_t = stats.data_ptr<T>() + t * B * kStats;
    const T* hin = hin_all.data_ptr<T>() + off;
    const T* hr = hr_all.data_ptr<T>() + off;
    const T* do_t = dop ? dop + off : nullptr;
    const T* zh_t = zhp ? zhp + off : nullptr;
    T* dxw_t = dxw_all.data_ptr<T>() + off3;
    T* drec_t = drec_all.data_ptr<T>() + off3;
    // the gradients reaching the new state (from step t+1: dh_part + dh_gemm ⊙ mask; the
    // output; zoneout; lengths), then the gates and the norms, per row
    at::parallel_for(0, B, grain(12 * H), [&](int64_t b0, int64_t b1) {
      const Sums<T> acc(sums_p + at::get_thread_num() * kSumsWidth * H, H);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H, r3 = b * 3 * H;
        const T v = vd ? vd[t * B + b] : T(1);
        if (!state_row_backward(dhw + r, dhp + r, dhg + r, rm ? rm + r : nullptr, do_t ? do_t + r : nullptr,
                                zh_t ? zh_t + r : nullptr, v, H)) {
          std::fill(dxw_t + r3, dxw_t + r3 + 3 * H, T(0));
          std::fill(drec_t + r3, drec_t + r3 + 3 * H, T(0));
          continue;
        }
        if (reset_after) {
          backward_row_after<T>(g_t + r3, x_t + r3, a_t + r3, hin + r, st_t + b * kStats, dhw + r, gx, gh, bh,
                                dxw_t + r3, drec_t + r3, dhp + r, acc, H);
        } else {
          backward_n_before<T>(g_t + r3, a_t + r3, hin + r, st_t + b * kStats, dhw + r, gh, dxw_t + r3,
                               drec_t + r3, dhp + r, acc, H);
        }
      }
    });
    if (reset_after) {
      back_gemm(dhg, H, drec_t, 3 * H, T(0));
      continue;
    }
    // reset_before: d(r ⊙ hr) = dn_raw W_hn, then the r,z half, then dhr = d(r,z)_raw W_rz +
    // d(r ⊙ hr) ⊙ r (rows past their length are zero throughout)
    T* drhp = drh.data_ptr<T>();
    n_back(drhp, H, drec_t + 2 * H, 3 * H, T(0));
    at::parallel_for(0, B, grain(12 * H), [&](int64_t b0, int64_t b1) {
      const Sums<T> acc(sums_p + at::get_thread_num() * kSumsWidth * H, H);
      for (int64_t b = b0; b < b1; ++b) {
        if (vd && vd[t * B + b] == T(0)) continue;
        const int64_t r = b * H, r3 = b * 3 * H;
        backward_rz_before<T>(g_t + r3, x_t + r3, a_t + r3, hr + r, drhp + r, st_t + b * kStats, gx, gh,
                              dxw_t + r3, drec_t + r3, acc, H);
      }
    });
    back_gemm(dhg, H, drec_t, 3 * H, T(0));
    for (int64_t b = 0; b < B; ++b) {
      const T* gb = g_t + b * 3 * H;
      for (int64_t j = 0; j < H; ++j) dhg[b * H + j] += drhp[b * H + j] * gb[j];
    }
  }
  Tensor dh0 = rm ? dh_part.add(dh_gemm.mul(*rmask)) : dh_part.add(dh_gemm);
  Tensor total = sums.sum(0);  // (12H)
  Named res = {{"dxw", dxw_all}, {"drec", drec_all}, {"dh0", dh0},
               {"ln_dgamma_x", total.narrow(0, 0, 3 * H)}, {"ln_dgamma_h", total.narrow(0, 3 * H, 3 * H)},
               {"dbias_x", total.narrow(0, 6 * H, 3 * H)}};
  if (BH) res.emplace("dbias_h", total.narrow(0, 9 * H, 3 * H));
  return res;
}

void check_norms(const Tensor& like, int64_t H, std::initializer_list<const Tensor*> norms) {
  for (const Tensor* t : norms) {
    check(*t, "layer-norm parameter", like);
    TORCH_CHECK(t->dim() == 1 && t->size(0) == 3 * H, "rnnkit native layer-norm GRU: a layer-norm parameter or "
                "bias has shape ", t->sizes(), ", expected (", 3 * H, ")");
  }
}

}  // namespace

Named gru_ln_forward(Tensor xw, Tensor h0, Tensor w_hh, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                     c10::optional<Tensor> zh, Tensor ln_gamma_x, Tensor ln_gamma_h, Tensor bias_x,
                     c10::optional<Tensor> bias_h, bool reset_after, bool reverse, bool keep) {
  for (auto* p : {&xw, &h0, &w_hh}) check(*p, "argument", xw);
  check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw); check_opt(zh, "zoneout", xw);
  const int64_t H = h0.size(1);
  check_norms(xw, H, {&ln_gamma_x, &ln_gamma_h, &bias_x});
  if (bias_h.has_value() && bias_h->defined()) check_norms(xw, H, {&*bias_h});
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return forward_impl<float>(xw, h0, w_hh, rmask, valid, zh, ln_gamma_x, ln_gamma_h, bias_x, bias_h, reset_after,
                               reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native GRU: float32 or float64 only");
  return forward_impl<double>(xw, h0, w_hh, rmask, valid, zh, ln_gamma_x, ln_gamma_h, bias_x, bias_h, reset_after,
                              reverse, keep);
}

Named gru_ln_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor w_hh,
                      c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      Tensor ln_gamma_x, Tensor ln_gamma_h, c10::optional<Tensor> bias_h, bool reset_after,
                      bool reverse) {
  const Tensor& g = entry(saved, "gates");
  for (auto& kv : saved) check(kv.second, kv.first.c_str(), g);
  for (auto* p : {&dhT, &w_hh}) check(*p, "argument", g);
  check_opt(dout, "dout", g); check_opt(rmask, "rmask", g); check_opt(valid, "valid", g);
  check_opt(zh, "zoneout", g);
  const int64_t H = dhT.size(1);
  check_norms(g, H, {&ln_gamma_x, &ln_gamma_h});
  if (bias_h.has_value() && bias_h->defined()) check_norms(g, H, {&*bias_h});
  at::NoGradGuard no_grad;
  if (g.scalar_type() == at::kFloat)
    return backward_impl<float>(dout, dhT, saved, w_hh, rmask, valid, zh, ln_gamma_x, ln_gamma_h, bias_h,
                                reset_after, reverse);
  TORCH_CHECK(g.scalar_type() == at::kDouble, "rnnkit native GRU: float32 or float64 only");
  return backward_impl<double>(dout, dhT, saved, w_hh, rmask, valid, zh, ln_gamma_x, ln_gamma_h, bias_h,
                               reset_after, reverse);
}

}  // namespace rnnkit_native
