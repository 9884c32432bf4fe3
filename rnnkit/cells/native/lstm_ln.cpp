// rnnkit's native layer-norm LSTM loop (rnnkit/cells/lstm.py with layer_norm): the forward
// and the hand-written BPTT with all three layer norms — of the input projection, of the
// recurrent projection and of the cell — fused with the gate passes. Entry points and
// shapes: lstm_ln.h.
//
// Nothing normalized is stored: the forward keeps the raw rows (x W_ihᵀ, which the engine
// holds anyway, and hr W_hhᵀ, written there by the GEMM) and c', with μ and 1/σ of each of the
// three norms per row; the backward recomputes â = (a - μ)/σ, the same arithmetic, so the
// same values. The layer-norm parameters' gradients are summed per thread in the gate pass
// (one 17H row each, in cache) and over the threads at the end.

#include "lstm_ln.h"

#include "gemm.h"
#include "lstm_gates.h"
#include "lstm_step.h"
#include "pool.h"

namespace rnnkit_native {
namespace {

// The per-row statistics kept per step: μ, 1/σ of the input row, of the recurrent row, of c'.
constexpr int64_t kStats = 6;

// One row (one sequence) of the forward step. Pass 1: the moments of the input row xw and of
// the recurrent row rec (4H each, row_moments); pass 2, per unit, the pre-activations
// a = γ_x ⊙ â_x + γ_h ⊙ â_h + b (+ peepholes) → i, f, g, o into g and c' into cn, with the
// shifted sums of c' (K = c'_0, computed ahead by the same formula); pass 3 â_c and
// h' = o ⊙ tanh(γ_c ⊙ â_c + β_c) into h.
template <typename T, bool PEEP>
inline void forward_row(const T* __restrict xw, const T* __restrict rec, const T* __restrict c,
                        const T* __restrict pp, const T* __restrict gam_x, const T* __restrict gam_h,
                        const T* __restrict bias, const T* __restrict gam_c, const T* __restrict beta_c,
                        T* __restrict g, T* __restrict st, T* __restrict cn, T* __restrict h, int64_t H) {
  T mx, rx, mh, rh;
  row_moments(xw, 4 * H, mx, rx);
  row_moments(rec, 4 * H, mh, rh);
  T Kc;
  {
    const T ai = gam_x[0] * ((xw[0] - mx) * rx) + gam_h[0] * ((rec[0] - mh) * rh) + bias[0];
    const T af = gam_x[H] * ((xw[H] - mx) * rx) + gam_h[H] * ((rec[H] - mh) * rh) + bias[H];
    const T ag = gam_x[2 * H] * ((xw[2 * H] - mx) * rx) + gam_h[2 * H] * ((rec[2 * H] - mh) * rh) + bias[2 * H];
    Kc = lstm_unit<T, PEEP>(ai, af, ag, T(0), c[0], pp, H, 0).c;
  }
  T s1 = T(0), s2 = T(0);
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < H; ++j) {
    const T c_prev = c[j];
    const T ai = gam_x[j] * ((xw[j] - mx) * rx) + gam_h[j] * ((rec[j] - mh) * rh) + bias[j];
    const T af = gam_x[H + j] * ((xw[H + j] - mx) * rx) + gam_h[H + j] * ((rec[H + j] - mh) * rh) + bias[H + j];
    const T ag = gam_x[2 * H + j] * ((xw[2 * H + j] - mx) * rx) + gam_h[2 * H + j] * ((rec[2 * H + j] - mh) * rh) +
                 bias[2 * H + j];
    const T ao = gam_x[3 * H + j] * ((xw[3 * H + j] - mx) * rx) + gam_h[3 * H + j] * ((rec[3 * H + j] - mh) * rh) +
                 bias[3 * H + j];
    const LstmUnit<T> u = lstm_unit<T, PEEP>(ai, af, ag, ao, c_prev, pp, H, j);
    g[j] = u.i; g[H + j] = u.f; g[2 * H + j] = u.g; g[3 * H + j] = u.o;
    cn[j] = u.c;
    const T d = u.c - Kc;
    s1 += d;
    s2 += d * d;
  }
  const T m = s1 / T(H);
  const T mc = Kc + m;
  const T rc = T(1) / std::sqrt(std::max(s2 / T(H) - m * m, T(0)) + T(1e-5));
  st[0] = mx; st[1] = rx; st[2] = mh; st[3] = rh; st[4] = mc; st[5] = rc;
  for (int64_t j = 0; j < H; ++j) h[j] = g[3 * H + j] * tanh_f(gam_c[j] * ((cn[j] - mc) * rc) + beta_c[j]);
}

// The parameter-gradient sums of one thread, one row of 17H: dγ_x, dγ_h, db (4H each),
// dγ_c, dβ_c (H each), the peepholes' dw_ci, dw_cf, dw_co (H each).
template <typename T>
struct Sums {
  T *gx, *gh, *b, *gc, *bc, *peep;
  Sums(T* row, int64_t H)
      : gx(row), gh(row + 4 * H), b(row + 8 * H), gc(row + 12 * H), bc(row + 13 * H), peep(row + 14 * H) {}
};
constexpr int64_t kSumsWidth = 17;  // × H

// Its backward for one row; dh, dc reach the new state (after the engine's zoneout and lengths
// handling). With ĝ = γ ⊙ dy a norm's backward is da = (ĝ - mean(ĝ) - â ⊙ mean(ĝ ⊙ â)) / σ:
//   pass 1 (H): tanh(LN(c')) recomputed; dcl = d LN(c') and do_a (into the scratch rows
//     dcl, doa), the c-norm's two row sums, dγ_c, dβ_c (and dw_co) summed;
//   pass 2 (H): d c' from them, the gate backward → da (4H, into dxw), dc_{t-1} added into
//     dc_prev (and dw_ci, dw_cf summed);
//   pass 3 (4H): the row sums of both projection norms, dγ_x, dγ_h, db summed;
//   pass 4 (4H): drec = d(hr W_hhᵀ) and, over da in dxw, d(x W_ihᵀ).
template <typename T, bool PEEP>
inline void backward_row(const T* __restrict g, const T* __restrict xw, const T* __restrict rec,
                         const T* __restrict c_prev, const T* __restrict cn, const T* __restrict st,
                         const T* __restrict dh, const T* __restrict dc, const T* __restrict pp,
                         const T* __restrict gam_x, const T* __restrict gam_h, const T* __restrict gam_c,
                         const T* __restrict beta_c, T* __restrict dxw, T* __restrict drec, T* __restrict dcl,
                         T* __restrict doa, T* __restrict dc_prev, const Sums<T>& acc, int64_t H) {
  const T mx = st[0], rx = st[1], mh = st[2], rh = st[3], mc = st[4], rc = st[5];
  T* __restrict acc_gc = acc.gc;
  T* __restrict acc_bc = acc.bc;
  T* __restrict acc_p = acc.peep;
  T s1c = T(0), s2c = T(0);
#pragma omp simd reduction(+ : s1c, s2c)
  for (int64_t j = 0; j < H; ++j) {
    const T o = g[3 * H + j];
    const T x = (cn[j] - mc) * rc;
    const T tcv = tanh_f(gam_c[j] * x + beta_c[j]);
    const T dl = dh[j] * o * (T(1) - tcv * tcv);
    const T do_a = dh[j] * tcv * o * (T(1) - o);
    dcl[j] = dl;
    doa[j] = do_a;
    acc_gc[j] += dl * x;
    acc_bc[j] += dl;
    if (PEEP) acc_p[2 * H + j] += do_a * cn[j];
    const T gh = gam_c[j] * dl;
    s1c += gh;
    s2c += gh * x;
  }
  s1c /= T(H);
  s2c /= T(H);
  for (int64_t j = 0; j < H; ++j) {
    const T i = g[j], f = g[H + j], gg = g[2 * H + j];
    const T do_a = doa[j];
    const T x = (cn[j] - mc) * rc;
    T dct = (gam_c[j] * dcl[j] - s1c - x * s2c) * rc + dc[j];  // d c' + dc
    if (PEEP) dct += pp[2 * H + j] * do_a;
    const T di_a = dct * gg * i * (T(1) - i);
    const T df_a = dct * c_prev[j] * f * (T(1) - f);
    const T dg_a = dct * i * (T(1) - gg * gg);
    T dcp = dct * f;
    if (PEEP) {
      dcp += pp[j] * di_a + pp[H + j] * df_a;
      acc_p[j] += di_a * c_prev[j];
      acc_p[H + j] += df_a * c_prev[j];
    }
    dxw[j] = di_a; dxw[H + j] = df_a; dxw[2 * H + j] = dg_a; dxw[3 * H + j] = do_a;
    dc_prev[j] += dcp;
  }
  T* __restrict acc_gx = acc.gx;
  T* __restrict acc_gh = acc.gh;
  T* __restrict acc_b = acc.b;
  T s1x = T(0), s2x = T(0), s1h = T(0), s2h = T(0);
#pragma omp simd reduction(+ : s1x, s2x, s1h, s2h)
  for (int64_t k = 0; k < 4 * H; ++k) {
    const T da = dxw[k];
    const T xx = (xw[k] - mx) * rx, xh = (rec[k] - mh) * rh;
    acc_gx[k] += da * xx;
    acc_gh[k] += da * xh;
    acc_b[k] += da;
    const T gx = gam_x[k] * da, gh = gam_h[k] * da;
    s1x += gx;
    s2x += gx * xx;
    s1h += gh;
    s2h += gh * xh;
  }
  s1x /= T(4 * H);
  s2x /= T(4 * H);
  s1h /= T(4 * H);
  s2h /= T(4 * H);
  for (int64_t k = 0; k < 4 * H; ++k) {
    const T da = dxw[k];
    const T xx = (xw[k] - mx) * rx, xh = (rec[k] - mh) * rh;
    drec[k] = (gam_h[k] * da - s1h - xh * s2h) * rh;
    dxw[k] = (gam_x[k] * da - s1x - xx * s2x) * rx;
  }
}

template <typename T>
Named forward_impl(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                   c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                   c10::optional<Tensor> zh, c10::optional<Tensor> zc, const Tensor& ln_gamma_x,
                   const Tensor& ln_gamma_h, const Tensor& bias, const Tensor& ln_gamma_c, const Tensor& ln_beta_c,
                   bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = c0.size(1), P = h0.size(1);
  auto opts = xw.options();
  const bool PROJ = w_hr.has_value() && w_hr->defined();
  const int64_t steps = keep ? Tn : 1;  // what is kept per step, else one step of scratch
  Tensor out = at::empty({Tn, B, P}, opts);
  Tensor h = h0.clone(), c = c0.clone();
  Tensor gates = pooled_empty({steps, B, 4 * H}, opts);
  Tensor rec_all = pooled_empty({steps, B, 4 * H}, opts);
  Tensor stats = pooled_empty({steps, B, kStats}, opts);
  Tensor cnew_all = pooled_empty({steps, B, H}, opts);
  // c_{t-1} is kept per step only where zoneout or lengths make it differ from the previous
  // step's c_new; otherwise c_in holds c_0 alone
  const bool keep_cin = zc.has_value() || valid.has_value();
  Tensor hr_all, cin_all;
  if (keep) {
    hr_all = pooled_empty({Tn, B, P}, opts);
    cin_all = keep_cin ? at::empty({Tn, B, H}, opts) : c0.unsqueeze(0).clone();
  }
  Tensor hf_all = PROJ ? at::empty({steps, B, H}, opts) : Tensor();
  Tensor hr_tmp = (rmask.has_value() && !keep) ? at::empty({B, P}, opts) : Tensor();
  const WeightGemm<T> rec_gemm(w_hh, 0, 4 * H, P, P, B);  // hr W_hhᵀ, W_hh packed once
  Tensor w_hr_t = PROJ ? w_hr->t().contiguous() : Tensor();  // (H, P)
  const T* gx = ln_gamma_x.data_ptr<T>();
  const T* gh = ln_gamma_h.data_ptr<T>();
  const T* bs = bias.data_ptr<T>();
  const T* gc = ln_gamma_c.data_ptr<T>();
  const T* bc = ln_beta_c.data_ptr<T>();
  const T* pp = ptr_or_null<T>(peep);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* zcp = ptr_or_null<T>(zc);
  T* hp = h.data_ptr<T>();
  T* cp = c.data_ptr<T>();
  const T* xwp = xw.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const int64_t off = t * B * H, offp = t * B * P;
    const int64_t ls = keep ? t : 0;  // the slot of this step's kept values
    const T* hr = lstm_step_input<T>(hp, cp, rm, keep ? hr_all.data_ptr<T>() + offp : nullptr,
                                     hr_tmp.defined() ? hr_tmp.data_ptr<T>() : nullptr,
                                     keep && keep_cin ? cin_all.data_ptr<T>() + off : nullptr, B * P, B * H);
    T* rec = rec_all.data_ptr<T>() + ls * B * 4 * H;
    rec_gemm(rec, 4 * H, hr, P, T(0));  // hr W_hhᵀ, normalized per row below
    const T* x_t = xwp + t * B * 4 * H;
    T* g_t = gates.data_ptr<T>() + ls * B * 4 * H;
    T* st_t = stats.data_ptr<T>() + ls * B * kStats;
    T* cn_t = cnew_all.data_ptr<T>() + ls * B * H;
    T* o_t = out.data_ptr<T>() + offp;
    T* hn_t = PROJ ? hf_all.data_ptr<T>() + ls * B * H : o_t;  // o ⊙ tanh(LN(c')), (B, H)
    const T* zc_t = zcp ? zcp + off : nullptr;
    at::parallel_for(0, B, grain(12 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H, r4 = b * 4 * H;
        if (pp) {
          forward_row<T, true>(x_t + r4, rec + r4, cp + r, pp, gx, gh, bs, gc, bc, g_t + r4, st_t + b * kStats,
                               cn_t + r, hn_t + r, H);
        } else {
          forward_row<T, false>(x_t + r4, rec + r4, cp + r, pp, gx, gh, bs, gc, bc, g_t + r4, st_t + b * kStats,
                                cn_t + r, hn_t + r, H);
        }
        if (vd && vd[t * B + b] == T(0)) continue;  // past its length: the state stays
        lstm_cell_update(cp + r, cn_t + r, zc_t ? zc_t + r : nullptr, H);
      }
    });
    lstm_step_output<T>(o_t, hn_t, hp, w_hr_t, zhp ? zhp + offp : nullptr, vd ? vd + t * B : nullptr, B, H, P, opts);
  }
  if (!keep) return {{"out", out}, {"h", h}, {"c", c}};
  Named res = {{"out", out}, {"h", h}, {"c", c}, {"gates", gates}, {"rec", rec_all}, {"ln_stats", stats},
               {"hr", hr_all}, {"c_in", cin_all}, {"c_new", cnew_all}};
  if (PROJ) res.emplace("h_full", hf_all);
  return res;
}

template <typename T>
Named backward_impl(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved, Tensor w_hh,
                    c10::optional<Tensor> w_hr, c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                    c10::optional<Tensor> valid, c10::optional<Tensor> zh, c10::optional<Tensor> zc,
                    const Tensor& ln_gamma_x, const Tensor& ln_gamma_h, const Tensor& ln_gamma_c,
                    const Tensor& ln_beta_c, bool reverse) {
  const Tensor& gates = entry(saved, "gates");
  const Tensor& xw_all = entry(saved, "xw");
  const Tensor& rec_all = entry(saved, "rec");
  const Tensor& stats = entry(saved, "ln_stats");
  const Tensor& cin_all = entry(saved, "c_in");
  const Tensor& cnew_all = entry(saved, "c_new");
  const int64_t Tn = gates.size(0), B = gates.size(1), H = dcT.size(1), P = dhT.size(1);
  auto opts = gates.options();
  const bool PROJ = w_hr.has_value() && w_hr->defined();
  Tensor dxw_all = pooled_empty({Tn, B, 4 * H}, opts);
  Tensor drec_all = pooled_empty({Tn, B, 4 * H}, opts);
  Tensor dcl_tmp = at::empty({2, B, H}, opts);  // d LN(c') and do_a, per row
  // the parameter-gradient sums, one row of 17H per thread (at::get_thread_num() inside
  // parallel_for is below at::get_num_threads())
  const int64_t n_sums = std::max<int64_t>(1, at::get_num_threads());
  Tensor sums = at::zeros({n_sums, kSumsWidth * H}, opts);
  LstmBackState<T> bs(dhT, dcT, Tn, PROJ);
  const WeightGemm<T> back_gemm(w_hh, 0, P, 4 * H, P, B, false);  // drec W_hh, W_hh packed once
  const T* gx = ln_gamma_x.data_ptr<T>();
  const T* gh = ln_gamma_h.data_ptr<T>();
  const T* gc = ln_gamma_c.data_ptr<T>();
  const T* bc = ln_beta_c.data_ptr<T>();
  const T* dop = ptr_or_null<T>(dout);
  const T* pp = ptr_or_null<T>(peep);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* zcp = ptr_or_null<T>(zc);
  T* dhg = bs.dh_gemm_p();
  T* dcp = bs.dc_p();
  T* dcw = bs.dcw_p();
  T* dcl = dcl_tmp.data_ptr<T>();
  T* sums_p = sums.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * H, offp = t * B * P, off4 = t * B * 4 * H;
    const T* ci = lstm_c_prev<T>(cin_all, cnew_all, t, Tn, reverse);
    const T* do_t = dop ? dop + offp : nullptr;
    const T* zh_t = zhp ? zhp + offp : nullptr;
    const T* zc_t = zcp ? zcp + off : nullptr;
    // 1, 2. the gradients reaching the new state, then through the projection
    const T* dhc = bs.reach(t, do_t, rm, zh_t, zc_t, vd ? vd + t * B : nullptr, w_hr);
    // 3. the cell and the three norms
    const T* g_t = gates.data_ptr<T>() + off4;
    const T* x_t = xw_all.data_ptr<T>() + off4;
    const T* rec_t = rec_all.data_ptr<T>() + off4;
    const T* st_t = stats.data_ptr<T>() + t * B * kStats;
    const T* cn_t = cnew_all.data_ptr<T>() + off;
    T* dxw_t = dxw_all.data_ptr<T>() + off4;
    T* drec_t = drec_all.data_ptr<T>() + off4;
    at::parallel_for(0, B, grain(12 * H), [&](int64_t b0, int64_t b1) {
      const Sums<T> acc(sums_p + at::get_thread_num() * kSumsWidth * H, H);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H, r4 = b * 4 * H;
        if (vd && vd[t * B + b] == T(0)) {
          std::fill(dxw_t + r4, dxw_t + r4 + 4 * H, T(0));
          std::fill(drec_t + r4, drec_t + r4 + 4 * H, T(0));
          continue;
        }
        if (pp) {
          backward_row<T, true>(g_t + r4, x_t + r4, rec_t + r4, ci + r, cn_t + r, st_t + b * kStats, dhc + r,
                                dcw + r, pp, gx, gh, gc, bc, dxw_t + r4, drec_t + r4, dcl + r, dcl + B * H + r,
                                dcp + r, acc, H);
        } else {
          backward_row<T, false>(g_t + r4, x_t + r4, rec_t + r4, ci + r, cn_t + r, st_t + b * kStats, dhc + r,
                                 dcw + r, pp, gx, gh, gc, bc, dxw_t + r4, drec_t + r4, dcl + r, dcl + B * H + r,
                                 dcp + r, acc, H);
        }
      }
    });
    back_gemm(dhg, P, drec_t, 4 * H, T(0));  // dh_{t-1} from the recurrent GEMM
  }
  Tensor total = sums.sum(0);  // (17H)
  Named res = {{"dxw", dxw_all}, {"drec", drec_all}, {"dh0", bs.dh0(rmask)}, {"dc0", bs.dc},
               {"ln_dgamma_x", total.narrow(0, 0, 4 * H)}, {"ln_dgamma_h", total.narrow(0, 4 * H, 4 * H)},
               {"dbias", total.narrow(0, 8 * H, 4 * H)}, {"ln_dgamma_c", total.narrow(0, 12 * H, H)},
               {"ln_dbeta_c", total.narrow(0, 13 * H, H)}};
  if (pp) res.emplace("dpeep", total.narrow(0, 14 * H, 3 * H).view({3, H}));
  if (PROJ) res.emplace("dh", bs.dh_all);
  return res;
}

void check_norms(const Tensor& like, int64_t H, std::initializer_list<std::pair<const Tensor*, int64_t>> norms) {
  for (const auto& [t, width] : norms) {
    check(*t, "layer-norm parameter", like);
    TORCH_CHECK(t->dim() == 1 && t->size(0) == width * H, "rnnkit native layer-norm LSTM: a layer-norm parameter "
                "has shape ", t->sizes(), ", expected (", width * H, ")");
  }
}

}  // namespace

Named lstm_ln_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                      c10::optional<Tensor> peep, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                      c10::optional<Tensor> zh, c10::optional<Tensor> zc, Tensor ln_gamma_x, Tensor ln_gamma_h,
                      Tensor bias, Tensor ln_gamma_c, Tensor ln_beta_c, bool reverse, bool keep) {
  for (auto* p : {&xw, &h0, &c0, &w_hh}) check(*p, "argument", xw);
  check_opt(w_hr, "weight_hr", xw); check_opt(peep, "peephole", xw); check_opt(rmask, "rmask", xw);
  check_opt(valid, "valid", xw); check_opt(zh, "zoneout h", xw); check_opt(zc, "zoneout c", xw);
  const int64_t H = c0.size(1);
  check_norms(xw, H, {{&ln_gamma_x, 4}, {&ln_gamma_h, 4}, {&bias, 4}, {&ln_gamma_c, 1}, {&ln_beta_c, 1}});
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return forward_impl<float>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_x, ln_gamma_h, bias,
                               ln_gamma_c, ln_beta_c, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native LSTM: float32 or float64 only");
  return forward_impl<double>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_x, ln_gamma_h, bias,
                              ln_gamma_c, ln_beta_c, reverse, keep);
}

Named lstm_ln_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved, Tensor w_hh,
                       c10::optional<Tensor> w_hr, c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                       c10::optional<Tensor> valid, c10::optional<Tensor> zh, c10::optional<Tensor> zc,
                       Tensor ln_gamma_x, Tensor ln_gamma_h, Tensor ln_gamma_c, Tensor ln_beta_c, bool reverse) {
  const Tensor& g = entry(saved, "gates");
  for (auto& kv : saved) check(kv.second, kv.first.c_str(), g);
  for (auto* p : {&dhT, &dcT, &w_hh}) check(*p, "argument", g);
  check_opt(dout, "dout", g); check_opt(w_hr, "weight_hr", g); check_opt(peep, "peephole", g);
  check_opt(rmask, "rmask", g); check_opt(valid, "valid", g); check_opt(zh, "zoneout h", g);
  check_opt(zc, "zoneout c", g);
  check_norms(g, dcT.size(1), {{&ln_gamma_x, 4}, {&ln_gamma_h, 4}, {&ln_gamma_c, 1}, {&ln_beta_c, 1}});
  at::NoGradGuard no_grad;
  if (g.scalar_type() == at::kFloat)
    return backward_impl<float>(dout, dhT, dcT, saved, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_x,
                                ln_gamma_h, ln_gamma_c, ln_beta_c, reverse);
  TORCH_CHECK(g.scalar_type() == at::kDouble, "rnnkit native LSTM: float32 or float64 only");
  return backward_impl<double>(dout, dhT, dcT, saved, w_hh, w_hr, peep, rmask, valid, zh, zc, ln_gamma_x,
                               ln_gamma_h, ln_gamma_c, ln_beta_c, reverse);
}

}  // namespace rnnkit_native
