// rnnkit's native IndRNN time loop (rnnkit/cells/indrnn.py): the forward and the hand-written
// BPTT. Entry points and shapes: common.h.
//   a = xw + u ⊙ (h ⊙ mask),   h' = φ(a)        (xw = x W_ihᵀ + b for all steps at once)
// The recurrence is element-wise: no GEMM per step, one fused pass over the (B, H) state
// per step forward and backward.

#include "common.h"

namespace rnnkit_native {
namespace {

// φ(a) and d ⊙ φ'(a) written through y = φ(a), for the activations IndRNN takes; ACT is a
// template argument so that each row loop is branch-free and vectorizes.
template <int64_t ACT, typename T> RNNKIT_INLINE T ind_act(T a) {
  if (ACT == kRelu) return a > T(0) ? a : T(0);
  if (ACT == kTanh) return tanh_f(a);
  if (ACT == kSigmoid) return sigmoid(a);
  return a;  // identity
}
template <int64_t ACT, typename T> RNNKIT_INLINE T ind_act_grad(T y, T d) {
  if (ACT == kRelu) return y > T(0) ? d : T(0);
  if (ACT == kTanh) return d * (T(1) - y * y);
  if (ACT == kSigmoid) return d * y * (T(1) - y);
  return d;
}

// Forward. xw (T, B, H) holds x W_ihᵀ + b and is overwritten with h' = φ(a) (before zoneout
// and lengths), which the backward reads. Returns out (T, B, H), h_T and, when keep,
// hr (T, B, H) = h_{t-1} ⊙ mask (what u multiplied).
template <typename T, int64_t ACT>
Named forward_impl(Tensor xw, Tensor h0, Tensor u, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                   c10::optional<Tensor> zh, bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = xw.size(2);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  Tensor hr_all = keep ? at::empty({Tn, B, H}, opts) : Tensor();
  const T* up = u.data_ptr<T>();
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  T* hp = h.data_ptr<T>();
  T* xwp = xw.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? Tn - 1 - s : s;
    const int64_t off = t * B * H;
    T* g = xwp + off;
    T* o_t = out.data_ptr<T>() + off;
    T* hr_t = keep ? hr_all.data_ptr<T>() + off : nullptr;
    const T* zh_t = zhp ? zhp + off : nullptr;
    at::parallel_for(0, B, grain(2 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        T* gb = g + r;
        T* ob = o_t + r;
        const T* hb = hp + r;
        if (rm) {
          const T* mb = rm + r;
          for (int64_t j = 0; j < H; ++j) {
            const T hr = hb[j] * mb[j];
            if (hr_t) hr_t[r + j] = hr;
            const T y = ind_act<ACT>(gb[j] + up[j] * hr);
            gb[j] = y;
            ob[j] = y;
          }
        } else {
          if (hr_t) std::memcpy(hr_t + r, hb, sizeof(T) * H);
          for (int64_t j = 0; j < H; ++j) {
            const T y = ind_act<ACT>(gb[j] + up[j] * hb[j]);
            gb[j] = y;
            ob[j] = y;
          }
        }
        state_row_forward(ob, hp + r, zh_t ? zh_t + r : nullptr, vd ? vd[t * B + b] : T(1), H);
      }
    });
  }
  if (!keep) return {{"out", out}, {"h", h}};
  return {{"out", out}, {"h", h}, {"hr", hr_all}};
}

// Backward. Returns da (T, B, H) = d(xw) = the gradient of the pre-activation (du = Σ da ⊙ hr
// and db = Σ da are the binding's) and dh_0.
template <typename T, int64_t ACT>
Named backward_impl(c10::optional<Tensor> dout, Tensor dhT, const Tensor& hnew_all, Tensor u,
                    c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                    bool reverse) {
  const int64_t Tn = hnew_all.size(0), B = hnew_all.size(1), H = hnew_all.size(2);
  auto opts = hnew_all.options();
  Tensor da_all = at::empty({Tn, B, H}, opts);
  Tensor dh_part = dhT.clone();              // the part of dh not through u
  Tensor dh_rec = at::zeros({B, H}, opts);   // da_{t+1} ⊙ u (before the dropout mask)
  Tensor work = at::empty({B, H}, opts);
  const T* up = u.data_ptr<T>();
  const T* dop = ptr_or_null<T>(dout);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  T* dhp = dh_part.data_ptr<T>();
  T* dhr = dh_rec.data_ptr<T>();
  T* dw = work.data_ptr<T>();
  for (int64_t s = 0; s < Tn; ++s) {
    const int64_t t = reverse ? s : Tn - 1 - s;
    const int64_t off = t * B * H;
    const T* y = hnew_all.data_ptr<T>() + off;
    T* da = da_all.data_ptr<T>() + off;
    const T* do_t = dop ? dop + off : nullptr;
    const T* zh_t = zhp ? zhp + off : nullptr;
    at::parallel_for(0, B, grain(2 * H), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r = b * H;
        T* d = dw + r;
        T* dab = da + r;
        T* dhrb = dhr + r;
        if (!state_row_backward(d, dhp + r, static_cast<const T*>(dhrb), rm ? rm + r : nullptr,
                                do_t ? do_t + r : nullptr, zh_t ? zh_t + r : nullptr,
                                vd ? vd[t * B + b] : T(1), H)) {
          std::fill(dab, dab + H, T(0));
          std::fill(dhrb, dhrb + H, T(0));
          continue;
        }
        const T* yb = y + r;
        for (int64_t j = 0; j < H; ++j) {
          const T a = ind_act_grad<ACT>(yb[j], d[j]);
          dab[j] = a;
          dhrb[j] = a * up[j];
        }
      }
    });
  }
  Tensor dh0 = rm ? dh_part.add(dh_rec.mul(*rmask)) : dh_part.add(dh_rec);
  return {{"da", da_all}, {"dh0", dh0}};
}

template <typename T>
Named forward_any(int64_t act, Tensor xw, Tensor h0, Tensor u, c10::optional<Tensor> rmask,
                  c10::optional<Tensor> valid, c10::optional<Tensor> zh, bool reverse, bool keep) {
  switch (act) {
    case kRelu: return forward_impl<T, kRelu>(xw, h0, u, rmask, valid, zh, reverse, keep);
    case kTanh: return forward_impl<T, kTanh>(xw, h0, u, rmask, valid, zh, reverse, keep);
    case kSigmoid: return forward_impl<T, kSigmoid>(xw, h0, u, rmask, valid, zh, reverse, keep);
    case kIdentity: return forward_impl<T, kIdentity>(xw, h0, u, rmask, valid, zh, reverse, keep);
    default: TORCH_CHECK(false, "rnnkit native IndRNN: no native code for the activation '",
                         activation_names()[act], "'");
  }
  return {};
}

template <typename T>
Named backward_any(int64_t act, c10::optional<Tensor> dout, Tensor dhT, const Tensor& hnew, Tensor u,
                   c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                   bool reverse) {
  switch (act) {
    case kRelu: return backward_impl<T, kRelu>(dout, dhT, hnew, u, rmask, valid, zh, reverse);
    case kTanh: return backward_impl<T, kTanh>(dout, dhT, hnew, u, rmask, valid, zh, reverse);
    case kSigmoid: return backward_impl<T, kSigmoid>(dout, dhT, hnew, u, rmask, valid, zh, reverse);
    case kIdentity: return backward_impl<T, kIdentity>(dout, dhT, hnew, u, rmask, valid, zh, reverse);
    default: TORCH_CHECK(false, "rnnkit native IndRNN: no native code for the activation '",
                         activation_names()[act], "'");
  }
  return {};
}

}  // namespace

Named indrnn_forward(Tensor xw, Tensor h0, Tensor u, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                     c10::optional<Tensor> zh, const std::string& phi, bool reverse, bool keep) {
  for (auto* p : {&xw, &h0, &u}) check(*p, "argument", xw);
  check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw); check_opt(zh, "zoneout", xw);
  const int64_t act = act_from_name(phi);
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat) return forward_any<float>(act, xw, h0, u, rmask, valid, zh, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native IndRNN: float32 or float64 only");
  return forward_any<double>(act, xw, h0, u, rmask, valid, zh, reverse, keep);
}

Named indrnn_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, Tensor u,
                      c10::optional<Tensor> rmask, c10::optional<Tensor> valid, c10::optional<Tensor> zh,
                      const std::string& phi, bool reverse) {
  const Tensor& hnew = entry(saved, "h");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dhT, &hnew, &u}) check(*p, "argument", hnew);
  check_opt(dout, "dout", hnew); check_opt(rmask, "rmask", hnew); check_opt(valid, "valid", hnew);
  check_opt(zh, "zoneout", hnew);
  const int64_t act = act_from_name(phi);
  at::NoGradGuard no_grad;
  if (hnew.scalar_type() == at::kFloat)
    return backward_any<float>(act, dout, dhT, hnew, u, rmask, valid, zh, reverse);
  return backward_any<double>(act, dout, dhT, hnew, u, rmask, valid, zh, reverse);
}

}  // namespace rnnkit_native
