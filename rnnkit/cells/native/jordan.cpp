// rnnkit's native Jordan network time loop (rnnkit/cells/jordan.py): the forward and the
// hand-written BPTT. Entry points, shapes and the activations (Act, act_from_name): common.h.
//   h = φ(x W_ihᵀ + b + (y ⊙ mask) W_hhᵀ),   y' = ψ(h W_hoᵀ + b_ho)

#include "common.h"

namespace rnnkit_native {
namespace {

template <typename T>
void activate(int64_t act, T* __restrict a, int64_t n) {
  switch (act) {
    case kSigmoid: for (int64_t j = 0; j < n; ++j) a[j] = sigmoid(a[j]); break;
    case kTanh: for (int64_t j = 0; j < n; ++j) a[j] = tanh_f(a[j]); break;
    case kRelu: for (int64_t j = 0; j < n; ++j) a[j] = a[j] > T(0) ? a[j] : T(0); break;
    case kHardSigmoid:
      for (int64_t j = 0; j < n; ++j) a[j] = std::min(T(6), std::max(T(0), a[j] + T(3))) / T(6);  // relu6(a + 3) / 6
      break;
    default: break;
  }
}

// d ⊙= φ'(a), written through y = φ(a).
template <typename T>
void activation_grad(int64_t act, const T* __restrict y, T* __restrict d, int64_t n) {
  switch (act) {
    case kSigmoid: for (int64_t j = 0; j < n; ++j) d[j] *= y[j] * (T(1) - y[j]); break;
    case kTanh: for (int64_t j = 0; j < n; ++j) d[j] *= T(1) - y[j] * y[j]; break;
    case kRelu: for (int64_t j = 0; j < n; ++j) d[j] = y[j] > T(0) ? d[j] : T(0); break;
    case kHardSigmoid:
      for (int64_t j = 0; j < n; ++j) d[j] = (y[j] > T(0) && y[j] < T(1)) ? d[j] * (T(1) / T(6)) : T(0);
      break;
    default: break;
  }
}

// Forward. xw (T, B, H) holds x W_ihᵀ + b and is overwritten with h. Returns out (T, B, O),
// y_T and, when keep, yr (T, B, O) = the GEMM's input y_{t-1} ⊙ mask and y_new (T, B, O) =
// ψ(...) before zoneout and lengths.
template <typename T>
Named jordan_forward_impl(Tensor xw, Tensor y0, Tensor w_hh, Tensor w_ho, c10::optional<Tensor> b_ho,
                                        c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                                        c10::optional<Tensor> zh, int64_t phi, int64_t psi, bool reverse,
                                        bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = xw.size(2), O = y0.size(1);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, O}, opts);
  Tensor y = y0.clone();
  Tensor yr_all = at::empty({keep ? Tn : 1, B, O}, opts);
  Tensor yn_all = at::empty({keep ? Tn : 1, B, O}, opts);
  Tensor w_t = w_hh.t().contiguous();   // (O, H)
  Tensor wo_t = w_ho.t().contiguous();  // (H, O)
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* bo = ptr_or_null<T>(b_ho);
  T* yp = y.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const int64_t slot = keep ? t : 0;
    T* yr = yr_all.data_ptr<T>() + slot * B * O;
    for (int64_t k = 0; k < B * O; ++k) yr[k] = rm ? yp[k] * rm[k] : yp[k];
    T* h = xw.data_ptr<T>() + t * B * H;
    step_gemm<T>(h, yr, w_t, B, O, H, opts);  // a = xw_t + yr W_hhᵀ
    activate(phi, h, B * H);
    T* yn = yn_all.data_ptr<T>() + slot * B * O;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < O; ++j) yn[b * O + j] = bo ? bo[j] : T(0);
    }
    step_gemm<T>(yn, h, wo_t, B, H, O, opts);  // z = h W_hoᵀ + b_ho
    activate(psi, yn, B * O);
    T* o_t = out.data_ptr<T>() + t * B * O;
    const T* zh_t = zhp ? zhp + t * B * O : nullptr;
    std::memcpy(o_t, yn, sizeof(T) * B * O);  // y_new is kept apart for the backward's ψ'
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = b * O;
      state_row_forward(o_t + r, yp + r, zh_t ? zh_t + r : nullptr, vd ? vd[t * B + b] : T(1), O);
    }
  }
  if (!keep) return {{"out", out}, {"y", y}};
  return {{"out", out}, {"y", y}, {"yr", yr_all}, {"y_new", yn_all}};
}

// Backward. Returns da (T, B, H) = the gradient of the input projection (= of the
// recurrent pre-activation), dz (T, B, O) = of the output pre-activation, and dy_0. The
// binding (cells/jordan.py) forms dW_hh (with yr), dW_ho (with h) and the biases from them.
template <typename T>
Named jordan_backward_impl(c10::optional<Tensor> dout, Tensor dyT, Tensor h_all, Tensor yn_all,
                                         Tensor w_hh, Tensor w_ho, c10::optional<Tensor> rmask,
                                         c10::optional<Tensor> valid, c10::optional<Tensor> zh, int64_t phi,
                                         int64_t psi, bool reverse) {
  const int64_t Tn = h_all.size(0), B = h_all.size(1), H = h_all.size(2), O = dyT.size(1);
  auto opts = h_all.options();
  Tensor da = at::zeros({Tn, B, H}, opts);
  Tensor dz = at::empty({Tn, B, O}, opts);
  Tensor dy_part = dyT.clone();
  Tensor dy_gemm = at::zeros({B, O}, opts);
  const T* dop = ptr_or_null<T>(dout);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  T* dyp = dy_part.data_ptr<T>();
  T* dyg = dy_gemm.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * O;
    T* dz_t = dz.data_ptr<T>() + off;
    const T* yn = yn_all.data_ptr<T>() + off;
    const T* do_t = dop ? dop + off : nullptr;
    const T* zh_t = zhp ? zhp + off : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r = b * O;
      const T v = vd ? vd[t * B + b] : T(1);
      T* d = dz_t + r;
      if (state_row_backward(d, dyp + r, dyg + r, rm ? rm + r : nullptr, do_t ? do_t + r : nullptr,
                             zh_t ? zh_t + r : nullptr, v, O)) {
        activation_grad(psi, yn + r, d, O);  // dz = dy' ⊙ ψ'
      }
    }
    T* da_t = da.data_ptr<T>() + t * B * H;
    step_gemm<T>(da_t, dz_t, w_ho, B, O, H, opts);  // dh = dz W_ho
    activation_grad(phi, h_all.data_ptr<T>() + t * B * H, da_t, B * H);  // da = dh ⊙ φ'
    dy_gemm.zero_();
    step_gemm<T>(dyg, da_t, w_hh, B, H, O, opts);  // dy_{t-1} = da W_hh (before the mask)
  }
  Tensor dy0 = rm ? dy_part.add(dy_gemm.mul(*rmask)) : dy_part.add(dy_gemm);
  return {{"da", da}, {"dz", dz}, {"dy0", dy0}};
}

}  // namespace

Named jordan_forward(Tensor xw, Tensor y0, Tensor w_hh, Tensor w_ho, c10::optional<Tensor> b_ho,
                     c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                     const std::string& phi_name, const std::string& psi_name, bool reverse, bool keep) {
  const int64_t phi = act_from_name(phi_name), psi = act_from_name(psi_name);
  for (auto* p : {&xw, &y0, &w_hh, &w_ho}) check(*p, "argument", xw);
  check_opt(b_ho, "bias_ho", xw); check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout", xw);
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return jordan_forward_impl<float>(xw, y0, w_hh, w_ho, b_ho, rmask, valid, zh, phi, psi, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native Jordan: float32 or float64 only");
  return jordan_forward_impl<double>(xw, y0, w_hh, w_ho, b_ho, rmask, valid, zh, phi, psi, reverse, keep);
}

Named jordan_backward(c10::optional<Tensor> dout, Tensor dyT, const Named& saved, Tensor w_hh, Tensor w_ho,
                      c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      const std::string& phi_name, const std::string& psi_name, bool reverse) {
  const int64_t phi = act_from_name(phi_name), psi = act_from_name(psi_name);
  const Tensor &h_all = entry(saved, "h"), &yn_all = entry(saved, "y_new");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dyT, &h_all, &yn_all, &w_hh, &w_ho}) check(*p, "argument", h_all);
  check_opt(dout, "dout", h_all); check_opt(rmask, "rmask", h_all); check_opt(valid, "valid", h_all);
  check_opt(zh, "zoneout", h_all);
  at::NoGradGuard no_grad;
  if (h_all.scalar_type() == at::kFloat)
    return jordan_backward_impl<float>(dout, dyT, h_all, yn_all, w_hh, w_ho, rmask, valid, zh, phi, psi, reverse);
  return jordan_backward_impl<double>(dout, dyT, h_all, yn_all, w_hh, w_ho, rmask, valid, zh, phi, psi, reverse);
}

}  // namespace rnnkit_native
