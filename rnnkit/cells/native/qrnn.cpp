// rnnkit's native fo-pooling loop (rnnkit/cells/qrnn.py, sru.py): the QRNN's pooling and
// readout after its causal convolution, and the SRU (both forms), forward and hand-written
// BPTT. Entry points and shapes: elementwise.h.
//   c' = f ⊙ c + (1 - f) ⊙ z,   h' = o ⊙ c' (QRNN)  |  r ⊙ c' + (1 - r) ⊙ α x̂ (SRU)
// No GEMM per step and no coupling between sequences: the rows (sequences) are split among
// the threads once (at::parallel_for once, not once per step), and each thread runs the steps
// over its rows, one contiguous pass per step.

#include "elementwise.h"

namespace rnnkit_native {
namespace {

enum PoolKind : int64_t { kQRNN = 0, kSRU = 1 };

int64_t pool_kind(const std::string& name) {
  if (name == "qrnn") return kQRNN;
  if (name == "sru") return kSRU;
  TORCH_CHECK(false, "rnnkit native fo-pooling: kind must be qrnn or sru, got '", name, "'");
  return 0;
}

// Forward. KIND: qrnn or sru; V: whether the SRU's gates read c_{t-1} (v_f, v_r given).
template <typename T, int64_t KIND, bool V>
Named forward_impl(const Tensor& u, const Tensor& h0, const Tensor& c0, const T* vf, const T* vr,
                   const c10::optional<Tensor>& valid, T alpha, bool reverse, bool keep) {
  const int64_t Tn = u.size(0), B = u.size(1), H = h0.size(1), G = u.size(2);
  auto opts = u.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone(), c = c0.clone();
  Tensor c_in = keep ? at::empty({Tn, B, H}, opts) : Tensor();
  const T* vd = ptr_or_null<T>(valid);
  const T* up = u.data_ptr<T>();
  T* op = out.data_ptr<T>();
  T* hp = h.data_ptr<T>();
  T* cp = c.data_ptr<T>();
  T* cin = keep ? c_in.data_ptr<T>() : nullptr;
  at::parallel_for(0, B, grain(Tn * H), [&](int64_t b0, int64_t b1) {
    for (int64_t s = 0; s < Tn; ++s) {  // step by step over this thread's rows
      const int64_t t = reverse ? Tn - 1 - s : s;
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict hb = hp + b * H;
        T* __restrict cb = cp + b * H;
        const int64_t r = (t * B + b) * H;
        T* __restrict ob = op + r;
        if (cin) std::memcpy(cin + r, cb, sizeof(T) * H);
        if (vd && vd[t * B + b] == T(0)) {  // past its length: output 0, the state stays
          std::fill(ob, ob + H, T(0));
          continue;
        }
        const T* __restrict x = up + (t * B + b) * G;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const T cprev = cb[j];
          T cn, hn;
          if (KIND == kQRNN) {
            const T z = tanh_f(x[j]), f = sigmoid(x[H + j]), o = sigmoid(x[2 * H + j]);
            cn = f * cprev + (T(1) - f) * z;
            hn = o * cn;
          } else {
            const T f = sigmoid(V ? x[H + j] + vf[j] * cprev : x[H + j]);
            const T rg = sigmoid(V ? x[2 * H + j] + vr[j] * cprev : x[2 * H + j]);
            cn = f * cprev + (T(1) - f) * x[j];
            hn = rg * cn + (T(1) - rg) * (alpha * x[3 * H + j]);
          }
          cb[j] = cn;
          ob[j] = hn;
        }
        std::memcpy(hb, ob, sizeof(T) * H);
      }
    }
  });
  if (!keep) return {{"out", out}, {"h", h}, {"c", c}};
  return {{"out", out}, {"h", h}, {"c", c}, {"c_in", c_in}};
}

// Backward, row by row in reverse step order (sru.py's step_backward; qrnn.py's
// readout_backward and coefficients_backward). dh reaches h' from the output at t and,
// at a sequence's last step, from h_T; dc from step t+1 and c_T:
//   QRNN: do = dh ⊙ c',  dc += dh ⊙ o,  dz = dc ⊙ (1 - f),  df = dc ⊙ (c - z),  dc_prev = dc ⊙ f
//   SRU:  dr = dh ⊙ (c' - α x̂),  dc += dh ⊙ r,  dx̂ = dh ⊙ (1 - r) α,  dx̃ = dc ⊙ (1 - f),
//         df = dc ⊙ (c - x̃),  dc_prev = dc ⊙ f (+ df̃ ⊙ v_f + dr̃ ⊙ v_r),  dv += d(gate) ⊙ c
template <typename T, int64_t KIND, bool V>
Named backward_impl(const c10::optional<Tensor>& dout, const Tensor& dhT, const Tensor& dcT, const Tensor& u,
                    const Tensor& c_in, const T* vf, const T* vr, const c10::optional<Tensor>& valid, T alpha,
                    bool reverse) {
  const int64_t Tn = u.size(0), B = u.size(1), H = dhT.size(1), G = u.size(2);
  auto opts = u.options();
  Tensor du = at::empty({Tn, B, G}, opts);
  Tensor dh = dhT.clone(), dc = dcT.clone();  // the carries, become dh0, dc0
  Tensor dvf = V ? at::zeros({B, H}, opts) : Tensor(), dvr = V ? at::zeros({B, H}, opts) : Tensor();
  const T* dop = ptr_or_null<T>(dout);
  const T* vd = ptr_or_null<T>(valid);
  const T* up = u.data_ptr<T>();
  const T* cin = c_in.data_ptr<T>();
  T* dup = du.data_ptr<T>();
  T* dhp = dh.data_ptr<T>();
  T* dcp = dc.data_ptr<T>();
  T* dvfp = V ? dvf.data_ptr<T>() : nullptr;
  T* dvrp = V ? dvr.data_ptr<T>() : nullptr;
  at::parallel_for(0, B, grain(Tn * H), [&](int64_t b0, int64_t b1) {
    const std::vector<T> no_dout(dop ? 0 : H, T(0));  // dout None: a row of zeros (the loop stays branch-free)
    std::vector<char> consumed(b1 - b0, 0);  // per row: whether h_T's gradient has reached its step
    for (int64_t s = 0; s < Tn; ++s) {  // step by step over this thread's rows
      const int64_t t = reverse ? s : Tn - 1 - s;
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict dhb = dhp + b * H;
        T* __restrict dcb = dcp + b * H;
        T* __restrict dvfb = V ? dvfp + b * H : nullptr;
        T* __restrict dvrb = V ? dvrp + b * H : nullptr;
        const int64_t r = (t * B + b) * H;
        T* __restrict dx = dup + (t * B + b) * G;
        if (vd && vd[t * B + b] == T(0)) {  // past its length: the state passed through
          std::fill(dx, dx + G, T(0));
          continue;
        }
        const T* __restrict x = up + (t * B + b) * G;
        const T* __restrict cpb = cin + r;
        const T* __restrict dob = dop ? dop + r : no_dout.data();
        const T keep_dh = consumed[b - b0] ? T(0) : T(1);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const T dhj = dhb[j] * keep_dh + dob[j];
          const T cprev = cpb[j];
          if (KIND == kQRNN) {
            const T z = tanh_f(x[j]), f = sigmoid(x[H + j]), o = sigmoid(x[2 * H + j]);
            const T cn = f * cprev + (T(1) - f) * z;
            const T dcj = dcb[j] + dhj * o;
            dx[2 * H + j] = dhj * cn * o * (T(1) - o);
            dx[j] = dcj * (T(1) - f) * (T(1) - z * z);
            dx[H + j] = dcj * (cprev - z) * f * (T(1) - f);
            dcb[j] = dcj * f;
          } else {
            const T f = sigmoid(V ? x[H + j] + vf[j] * cprev : x[H + j]);
            const T rg = sigmoid(V ? x[2 * H + j] + vr[j] * cprev : x[2 * H + j]);
            const T xh = alpha * x[3 * H + j];
            const T cn = f * cprev + (T(1) - f) * x[j];
            const T dcj = dcb[j] + dhj * rg;
            const T drt = dhj * (cn - xh) * rg * (T(1) - rg);
            const T dft = dcj * (cprev - x[j]) * f * (T(1) - f);
            dx[j] = dcj * (T(1) - f);
            dx[H + j] = dft;
            dx[2 * H + j] = drt;
            dx[3 * H + j] = dhj * (T(1) - rg) * alpha;
            T dcprev = dcj * f;
            if (V) {
              dvfb[j] += dft * cprev;
              dvrb[j] += drt * cprev;
              dcprev += dft * vf[j] + drt * vr[j];
            }
            dcb[j] = dcprev;
          }
        }
        if (!consumed[b - b0]) {
          consumed[b - b0] = 1;
          std::fill(dhb, dhb + H, T(0));
        }
      }
    }
  });
  Named res = {{"du", du}, {"dh0", dh}, {"dc0", dc}};
  if (V) {
    res["dv_f"] = dvf;
    res["dv_r"] = dvr;
  }
  return res;
}

template <typename T>
Named forward_any(int64_t kind, const Tensor& u, const Tensor& h0, const Tensor& c0,
                  const c10::optional<Tensor>& v_f, const c10::optional<Tensor>& v_r,
                  const c10::optional<Tensor>& valid, T alpha, bool reverse, bool keep) {
  const T* vf = ptr_or_null<T>(v_f);
  const T* vr = ptr_or_null<T>(v_r);
  if (kind == kQRNN) return forward_impl<T, kQRNN, false>(u, h0, c0, nullptr, nullptr, valid, alpha, reverse, keep);
  if (vf) return forward_impl<T, kSRU, true>(u, h0, c0, vf, vr, valid, alpha, reverse, keep);
  return forward_impl<T, kSRU, false>(u, h0, c0, nullptr, nullptr, valid, alpha, reverse, keep);
}

template <typename T>
Named backward_any(int64_t kind, const c10::optional<Tensor>& dout, const Tensor& dhT, const Tensor& dcT,
                   const Tensor& u, const Tensor& c_in, const c10::optional<Tensor>& v_f,
                   const c10::optional<Tensor>& v_r, const c10::optional<Tensor>& valid, T alpha, bool reverse) {
  const T* vf = ptr_or_null<T>(v_f);
  const T* vr = ptr_or_null<T>(v_r);
  if (kind == kQRNN)
    return backward_impl<T, kQRNN, false>(dout, dhT, dcT, u, c_in, nullptr, nullptr, valid, alpha, reverse);
  if (vf) return backward_impl<T, kSRU, true>(dout, dhT, dcT, u, c_in, vf, vr, valid, alpha, reverse);
  return backward_impl<T, kSRU, false>(dout, dhT, dcT, u, c_in, nullptr, nullptr, valid, alpha, reverse);
}

void check_shapes(const Tensor& u, int64_t kind, int64_t H, const c10::optional<Tensor>& v_f,
                  const c10::optional<Tensor>& v_r) {
  const int64_t G = kind == kQRNN ? 3 : 4;
  TORCH_CHECK(u.dim() == 3 && u.size(2) == G * H, "rnnkit native fo-pooling: u must be (T, B, ", G, "·H) = (T, B, ",
              G * H, "), got ", u.sizes());
  const bool has_f = v_f.has_value() && v_f->defined(), has_r = v_r.has_value() && v_r->defined();
  TORCH_CHECK(has_f == has_r, "rnnkit native fo-pooling: give v_f and v_r together, or neither");
  TORCH_CHECK(!has_f || kind == kSRU, "rnnkit native fo-pooling: v_f and v_r are the SRU's");
  TORCH_CHECK(!has_f || (v_f->numel() == H && v_r->numel() == H), "rnnkit native fo-pooling: v_f and v_r must "
              "have H = ", H, " entries");
}

}  // namespace

Named fopool_forward(Tensor u, Tensor h0, Tensor c0, c10::optional<Tensor> v_f, c10::optional<Tensor> v_r,
                     c10::optional<Tensor> valid, const std::string& kind, double alpha, bool reverse, bool keep) {
  for (auto* p : {&u, &h0, &c0}) check(*p, "argument", u);
  check_opt(v_f, "v_f", u); check_opt(v_r, "v_r", u); check_opt(valid, "valid", u);
  const int64_t k = pool_kind(kind);
  check_shapes(u, k, h0.size(1), v_f, v_r);
  at::NoGradGuard no_grad;
  if (u.scalar_type() == at::kFloat)
    return forward_any<float>(k, u, h0, c0, v_f, v_r, valid, static_cast<float>(alpha), reverse, keep);
  TORCH_CHECK(u.scalar_type() == at::kDouble, "rnnkit native fo-pooling: float32 or float64 only");
  return forward_any<double>(k, u, h0, c0, v_f, v_r, valid, alpha, reverse, keep);
}

Named fopool_backward(c10::optional<Tensor> dout, Tensor dhT, Tensor dcT, const Named& saved,
                      c10::optional<Tensor> v_f, c10::optional<Tensor> v_r, c10::optional<Tensor> valid,
                      const std::string& kind, double alpha, bool reverse) {
  const Tensor& u = entry(saved, "u");
  const Tensor& c_in = entry(saved, "c_in");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dhT, &dcT, &u, &c_in}) check(*p, "argument", u);
  check_opt(dout, "dout", u); check_opt(v_f, "v_f", u); check_opt(v_r, "v_r", u); check_opt(valid, "valid", u);
  const int64_t k = pool_kind(kind);
  check_shapes(u, k, dhT.size(1), v_f, v_r);
  at::NoGradGuard no_grad;
  if (u.scalar_type() == at::kFloat)
    return backward_any<float>(k, dout, dhT, dcT, u, c_in, v_f, v_r, valid, static_cast<float>(alpha), reverse);
  TORCH_CHECK(u.scalar_type() == at::kDouble, "rnnkit native fo-pooling: float32 or float64 only");
  return backward_any<double>(k, dout, dhT, dcT, u, c_in, v_f, v_r, valid, alpha, reverse);
}

}  // namespace rnnkit_native
