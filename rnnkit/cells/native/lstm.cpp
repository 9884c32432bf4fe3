// rnnkit's native LSTM time loop (rnnkit/cells/lstm.py: sigmoid/tanh, peepholes, projection;
// the layer-norm LSTM has its own loop, lstm_ln.cpp): the forward and the hand-written BPTT.
// Entry points and shapes: common.h.

#include "common.h"
#include "gemm.h"
#include "lstm_gates.h"
#include "lstm_step.h"
#include "pool.h"

namespace rnnkit_native {
namespace {

// One row (one sequence) of the forward step: the gates g (4H, pre-activations in,
// activations out), the previous cell c, peepholes pp (3H) → c_new, tanh(c_new), h_new.
// Branch-free so that it vectorizes; PEEP is a template argument for the same reason.
template <typename T, bool PEEP>
inline void forward_row(T* __restrict g, const T* __restrict c, const T* __restrict pp, T* __restrict cn_out,
                        T* __restrict tc_out, T* __restrict h_out, int64_t H) {
  // (the gate math is lstm_gates.h's, inlined; GCC vectorizes this loop only with the stores
  // to g in the loop body itself; lstm_ln.cpp's normalized form is written out there)
  for (int64_t j = 0; j < H; ++j) {
    const LstmUnit<T> u = lstm_unit<T, PEEP>(g[j], g[H + j], g[2 * H + j], g[3 * H + j], c[j], pp, H, j);
    const T tcv = tanh_f(u.c);
    g[j] = u.i; g[H + j] = u.f; g[2 * H + j] = u.g; g[3 * H + j] = u.o;
    cn_out[j] = u.c;
    tc_out[j] = tcv;
    h_out[j] = u.o * tcv;
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

// Forward. xw (T, B, 4H) holds x W_ihᵀ + b and is overwritten with the activated gates
// (i, f, g, o) that the backward reads. The output h has P = proj_size units (P = H without
// projection: h = o ⊙ tanh(c'); with it h = W_hr (o ⊙ tanh(c')) and W_hh is (4H, P)).
// Returns out (T, B, P), h_T, c_T and, when keep, hr (T, B, P) = the GEMM's input
// h_{t-1} ⊙ mask, c_in (T, B, H) = c_{t-1}, c_new (T, B, H) = c_t before zoneout/lengths,
// tc (T, B, H) = tanh of c_t, then with projection h_full (T, B, H) = o ⊙ tanh(c_t).
template <typename T>
Named forward_impl(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                                 c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                                 c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                 c10::optional<Tensor> zc, bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = c0.size(1), P = h0.size(1);
  auto opts = xw.options();
  const bool PROJ = w_hr.has_value() && w_hr->defined();
  Tensor out = at::empty({Tn, B, P}, opts);
  Tensor h = h0.clone(), c = c0.clone();
  Tensor hr_all, cin_all, cnew_all, tc_all, hf_all;
  // c_{t-1} is kept per step only where zoneout or lengths make it differ from the previous
  // step's c_new; otherwise cin holds c_0 alone.
  const bool keep_cin = zc.has_value() || valid.has_value();
  if (keep) {
    hr_all = pooled_empty({Tn, B, P}, opts);
    cin_all = keep_cin ? at::empty({Tn, B, H}, opts) : c0.unsqueeze(0).clone();
    cnew_all = pooled_empty({Tn, B, H}, opts);
    tc_all = pooled_empty({Tn, B, H}, opts);
  }
  if (PROJ) hf_all = at::empty({keep ? Tn : 1, B, H}, opts);
  Tensor scratch = keep ? Tensor() : at::empty({2, B, H}, opts);  // c_new, tanh(c_new)
  Tensor hr_tmp = (rmask.has_value() && !keep) ? at::empty({B, P}, opts) : Tensor();
  // the recurrent product hr W_hhᵀ, accumulated onto the step's gates by BLAS with W_hh packed once
  const WeightGemm<T> rec_gemm(w_hh, 0, 4 * H, P, P, B);
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
    const T* hr = lstm_step_input<T>(hp, cp, rm, keep ? hr_all.data_ptr<T>() + offp : nullptr,
                                     hr_tmp.defined() ? hr_tmp.data_ptr<T>() : nullptr,
                                     keep && keep_cin ? cin_all.data_ptr<T>() + off : nullptr, B * P, B * H);
    T* g = xwp + t * B * 4 * H;
    rec_gemm(g, 4 * H, hr, P, T(1));  // gates = xw_t + hr W_hhᵀ
    const int64_t ls = keep ? t : 0;  // the per-step slot of this step's kept values
    T* o_t = out.data_ptr<T>() + offp;
    T* hn_t = PROJ ? hf_all.data_ptr<T>() + ls * B * H : o_t;  // o ⊙ tanh(...), (B, H)
    T* cn_t = keep ? cnew_all.data_ptr<T>() + off : scratch.data_ptr<T>();
    T* tc_t = keep ? tc_all.data_ptr<T>() + off : scratch.data_ptr<T>() + B * H;
    const T* zh_t = zhp ? zhp + offp : nullptr;
    const T* zc_t = zcp ? zcp + off : nullptr;
    at::parallel_for(0, B, grain(8 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        if (pp) {
          forward_row<T, true>(g + b * 4 * H, cp + r, pp, cn_t + r, tc_t + r, hn_t + r, H);
        } else {
          forward_row<T, false>(g + b * 4 * H, cp + r, pp, cn_t + r, tc_t + r, hn_t + r, H);
        }
        if (vd && vd[t * B + b] == T(0)) continue;  // past its length: the state stays
        lstm_cell_update(cp + r, cn_t + r, zc_t ? zc_t + r : nullptr, H);
      }
    });
    lstm_step_output<T>(o_t, hn_t, hp, w_hr_t, zh_t, vd ? vd + t * B : nullptr, B, H, P, opts);
  }
  if (!keep) return {{"out", out}, {"h", h}, {"c", c}};
  Named res = {{"out", out}, {"h", h}, {"c", c}, {"hr", hr_all}, {"c_in", cin_all}, {"c_new", cnew_all},
               {"tc", tc_all}};
  if (PROJ) res.emplace("h_full", hf_all);
  return res;
}

// Backward. Returns dgates (T, B, 4H) = d(x W_ihᵀ + b) = d(h W_hhᵀ) for every step, dh_0 and
// dc_0, then with projection dh (T, B, P) = the gradient reaching the projected h (dW_hr = Σ dhᵀ
// h_full). The binding (cells/lstm.py) forms dW_hh, the bias and peephole gradients from
// these with one reduction or GEMM each.
template <typename T>
Named backward_impl(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved, Tensor w_hh, c10::optional<Tensor> w_hr,
                                  c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                                  c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                  c10::optional<Tensor> zc, bool reverse) {
  const Tensor& gates = entry(saved, "gates");
  const Tensor& cin_all = entry(saved, "c_in");
  const Tensor& cnew_all = entry(saved, "c_new");
  const Tensor& tc_all = entry(saved, "tc");
  const int64_t Tn = gates.size(0), B = gates.size(1), H = dcT.size(1), P = dhT.size(1);
  auto opts = gates.options();
  const bool PROJ = w_hr.has_value() && w_hr->defined();
  Tensor dgates = pooled_empty({Tn, B, 4 * H}, opts);
  // peepholes: per row the running sums of dw_ci, dw_cf, dw_co (B, 3H): each row is one
  // thread's at a time, so the sums need no lock; summed over B at the end
  Tensor acc_p = (peep.has_value() && peep->defined()) ? at::zeros({B, 3 * H}, opts) : Tensor();
  LstmBackState<T> st(dhT, dcT, Tn, PROJ);
  // dh_{t-1} = dgates W_hh by BLAS, W_hh (4H, P) packed once
  const WeightGemm<T> back_gemm(w_hh, 0, P, 4 * H, P, B, false);
  const T* dop = ptr_or_null<T>(dout);
  const T* pp = ptr_or_null<T>(peep);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* zcp = ptr_or_null<T>(zc);
  T* dhg = st.dh_gemm_p();
  T* dcp = st.dc_p();
  T* dcw = st.dcw_p();
  T* dgp = dgates.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * H, offp = t * B * P;
    const T* g = gates.data_ptr<T>() + t * B * 4 * H;
    T* dg = dgp + t * B * 4 * H;
    const T* ci = lstm_c_prev<T>(cin_all, cnew_all, t, Tn, reverse);
    const T* tc_t = tc_all.data_ptr<T>() + off;
    const T* do_t = dop ? dop + offp : nullptr;
    const T* zh_t = zhp ? zhp + offp : nullptr;
    const T* zc_t = zcp ? zcp + off : nullptr;
    // 1, 2. the gradients reaching the new state, then through the projection
    const T* dhc = st.reach(t, do_t, rm, zh_t, zc_t, vd ? vd + t * B : nullptr, w_hr);
    // 3. the cell
    at::parallel_for(0, B, grain(8 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        if (vd && vd[t * B + b] == T(0)) {
          std::fill(dg + b * 4 * H, dg + (b + 1) * 4 * H, T(0));
          continue;
        }
        const T* dh = dhc + r;
        const T* dcn = dcw + r;
        if (pp) {
          backward_row<T, true>(g + b * 4 * H, ci + r, cnew_all.data_ptr<T>() + off + r, tc_t + r, dh, dcn, pp,
                                dg + b * 4 * H, dcp + r, acc_p.data_ptr<T>() + b * 3 * H, H);
        } else {
          backward_row<T, false>(g + b * 4 * H, ci + r, nullptr, tc_t + r, dh, dcn, pp, dg + b * 4 * H, dcp + r,
                                 nullptr, H);
        }
      }
    });
    back_gemm(dhg, P, dg, 4 * H, T(0));  // dh_{t-1} from the recurrent GEMM (before the mask)
  }
  Named res = {{"dgates", dgates}, {"dh0", st.dh0(rmask)}, {"dc0", st.dc}};
  if (PROJ) res.emplace("dh", st.dh_all);
  if (acc_p.defined()) res.emplace("dpeep", acc_p.sum(0).view({3, H}));
  return res;
}

}  // namespace

Named lstm_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, c10::optional<Tensor> w_hr,
                                 c10::optional<Tensor> peep,
                                 c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                                 c10::optional<Tensor> zh, c10::optional<Tensor> zc, bool reverse, bool keep) {
  for (auto* p : {&xw, &h0, &c0, &w_hh}) check(*p, "argument", xw);
  check_opt(w_hr, "weight_hr", xw); check_opt(peep, "peephole", xw); check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout h", xw); check_opt(zc, "zoneout c", xw);
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return forward_impl<float>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native LSTM: float32 or float64 only");
  return forward_impl<double>(xw, h0, c0, w_hh, w_hr, peep, rmask, valid, zh, zc, reverse, keep);
}

Named lstm_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved,
                                  Tensor w_hh, c10::optional<Tensor> w_hr, c10::optional<Tensor> peep, c10::optional<Tensor> rmask,
                                  c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                                  c10::optional<Tensor> zc, bool reverse) {
  const Tensor& g = entry(saved, "gates");
  for (auto& kv : saved) check(kv.second, kv.first.c_str(), g);
  for (auto* p : {&dhT, &dcT, &w_hh}) check(*p, "argument", g);
  check_opt(dout, "dout", g); check_opt(w_hr, "weight_hr", g); check_opt(peep, "peephole", g); check_opt(rmask, "rmask", g);
  check_opt(valid, "valid", g); check_opt(zh, "zoneout h", g); check_opt(zc, "zoneout c", g);
  at::NoGradGuard no_grad;
  if (g.scalar_type() == at::kFloat)
    return backward_impl<float>(dout, dhT, dcT, saved, w_hh, w_hr, peep, rmask, valid, zh, zc, reverse);
  return backward_impl<double>(dout, dhT, dcT, saved, w_hh, w_hr, peep, rmask, valid, zh, zc, reverse);
}

}  // namespace rnnkit_native
