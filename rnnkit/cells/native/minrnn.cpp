// rnnkit's native minGRU / minLSTM time loop (rnnkit/cells/minrnn.py): the forward and the
// hand-written BPTT. Entry points and shapes: elementwise.h.
//   h' = a ⊙ (h ⊙ rmask) + b,   (a, b) = coefficients(xw_t)   (xw = x W_ihᵀ + b for all steps)
// No GEMM per step and no coupling between sequences: the rows (sequences) are split among
// the threads once (at::parallel_for once, not once per step), and each thread runs the steps
// over its rows, one contiguous pass per step.

#include "elementwise.h"

namespace rnnkit_native {
namespace {

enum MinKind : int64_t { kMinGRU = 0, kMinLSTM = 1, kMinLSTMPlain = 2 };
enum Candidate : int64_t { kCandIdentity = 0, kCandG = 1, kCandTanh = 2 };

int64_t kind_from_name(const std::string& name) {
  if (name == "mingru") return kMinGRU;
  if (name == "minlstm") return kMinLSTM;
  if (name == "minlstm_plain") return kMinLSTMPlain;
  TORCH_CHECK(false, "rnnkit native minGRU/minLSTM: kind must be mingru, minlstm or minlstm_plain, got '", name,
              "'");
  return 0;
}

int64_t candidate_from_name(const std::string& name) {
  if (name == "identity") return kCandIdentity;
  if (name == "g") return kCandG;
  if (name == "tanh") return kCandTanh;
  TORCH_CHECK(false, "rnnkit native minGRU/minLSTM: candidate must be identity, g or tanh, got '", name, "'");
  return 0;
}

// h̃ = act(x) and dh̃ ⊙ act'(x) (written through h̃ as in minrnn.py's _candidate_backward).
template <int64_t CAND, typename T> RNNKIT_INLINE T candidate(T x) {
  if (CAND == kCandTanh) return tanh_f(x);
  if (CAND == kCandG) {  // both branches computed, then a select: the loop stays branch-free
    const T pos = x + T(0.5), neg = sigmoid(x);
    return x >= T(0) ? pos : neg;
  }
  return x;
}
template <int64_t CAND, typename T> RNNKIT_INLINE T candidate_grad(T x, T ht, T d) {
  if (CAND == kCandTanh) return d * (T(1) - ht * ht);
  if (CAND == kCandG) {
    const T neg = d * ht * (T(1) - ht);
    return x >= T(0) ? d : neg;
  }
  return d;
}

// The gates of one unit j from its row xw (G·H): everything the forward and backward read.
//   minGRU:        f = a = σ(-xz) (1 - z), i = z = 1 - a
//   minLSTM:       f = f' = p / (p + q), i = i' = q / (p + q) with p = 1 + e^{-xi},
//                  q = 1 + e^{-xf} (f / (f + i) = σ(log f - log i), minrnn.py's form), both
//                  scaled by e^{-m}, m = max(0, -xf, -xi), so that neither overflows and
//                  p + q ≥ 1; fc = 1 - σ(xf) = e^{-xf}/q, ic = 1 - σ(xi) = e^{-xi}/p
//   minLSTM plain: f = σ(xf), i = σ(xi)
template <typename T> struct Gates {
  T f, i, fc, ic, xh, ht;  // fc, ic: minLSTM's 1 - σ(xf), 1 - σ(xi)
};

template <int64_t KIND, int64_t CAND, typename T>
RNNKIT_INLINE Gates<T> gates(const T* __restrict xw, int64_t H, int64_t j) {
  Gates<T> g;
  if (KIND == kMinGRU) {
    g.xh = xw[H + j];
    g.f = sigmoid(-xw[j]);
    g.i = T(1) - g.f;
    g.fc = g.ic = T(0);
  } else if (KIND == kMinLSTM) {
    const T xf = xw[j], xi = xw[H + j];
    g.xh = xw[2 * H + j];
    const T m = std::max(std::max(-xf, -xi), T(0));
    const T e0 = exp_f(-m), ef = exp_f(-xf - m), ei = exp_f(-xi - m);
    const T p = e0 + ei, q = e0 + ef;
    const T inv = T(1) / (p + q);
    g.f = p * inv;
    g.i = q * inv;
    g.fc = ef / q;
    g.ic = ei / p;
  } else {
    g.xh = xw[2 * H + j];
    g.f = sigmoid(xw[j]);
    g.i = sigmoid(xw[H + j]);
    g.fc = g.ic = T(0);
  }
  g.ht = candidate<CAND>(g.xh);
  return g;
}

// Forward. Returns out (T, B, H), h_T and, when keep, hr (T, B, H) = h_{t-1} ⊙ rmask.
template <typename T, int64_t KIND, int64_t CAND>
Named forward_impl(const Tensor& xw, const Tensor& h0, const c10::optional<Tensor>& rmask,
                   const c10::optional<Tensor>& valid, const c10::optional<Tensor>& zh, bool reverse, bool keep) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = h0.size(1), GH = xw.size(2);
  auto opts = xw.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor h = h0.clone();
  Tensor hr_all = keep ? at::empty({Tn, B, H}, opts) : Tensor();
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* xwp = xw.data_ptr<T>();
  T* hp = h.data_ptr<T>();
  T* op = out.data_ptr<T>();
  T* hrp = keep ? hr_all.data_ptr<T>() : nullptr;
  at::parallel_for(0, B, grain(Tn * H), [&](int64_t b0, int64_t b1) {
    std::vector<T> scratch(H);  // hr when it is not kept
    // step by step over this thread's rows: each step reads and writes contiguous memory
    for (int64_t s = 0; s < Tn; ++s) {
      const int64_t t = reverse ? Tn - 1 - s : s;
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict hb = hp + b * H;
        const T* __restrict mb = rm ? rm + b * H : nullptr;
        const int64_t r = (t * B + b) * H;
        const T* __restrict x = xwp + (t * B + b) * GH;
        T* __restrict ob = op + r;
        // hr = h ⊙ rmask, into the kept buffer (or scratch); without a mask h itself
        const T* hr = hb;
        if (mb || hrp) {
          T* __restrict dst = hrp ? hrp + r : scratch.data();
          if (mb) {
            for (int64_t j = 0; j < H; ++j) dst[j] = hb[j] * mb[j];
          } else {
            std::memcpy(dst, hb, sizeof(T) * H);
          }
          hr = dst;
        }
        const T* __restrict hrr = hr;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {  // branch-free: vectorizes
          const Gates<T> g = gates<KIND, CAND>(x, H, j);
          ob[j] = g.f * hrr[j] + g.i * g.ht;  // h' = a ⊙ hr + b
        }
        state_row_forward(ob, hb, zhp ? zhp + r : nullptr, vd ? vd[t * B + b] : T(1), H);
      }
    }
  });
  if (!keep) return {{"out", out}, {"h", h}};
  return {{"out", out}, {"h", h}, {"hr", hr_all}};
}

// Backward, row by row in reverse step order. With d the gradient reaching h' (from the
// output and step t+1, after lengths and zoneout): da = d ⊙ hr, db = d, dh += d ⊙ a (⊙ rmask),
// then minrnn.py's coefficients_backward:
//   minGRU:        dz = db ⊙ h̃ - da,  dxz = dz ⊙ z (1 - z),  dxh = act'(db ⊙ z)
//   minLSTM:       dd = (da - db ⊙ h̃) ⊙ f' i',  dxf = dd ⊙ (1 - f),  dxi = -dd ⊙ (1 - i),
//                  dxh = act'(db ⊙ i')
//   minLSTM plain: dxf = da ⊙ f (1 - f),  dxi = db ⊙ h̃ ⊙ i (1 - i),  dxh = act'(db ⊙ i)
template <typename T, int64_t KIND, int64_t CAND>
Named backward_impl(const c10::optional<Tensor>& dout, const Tensor& dhT, const Tensor& xw, const Tensor& hr_all,
                    const c10::optional<Tensor>& rmask, const c10::optional<Tensor>& valid,
                    const c10::optional<Tensor>& zh, bool reverse) {
  const int64_t Tn = xw.size(0), B = xw.size(1), H = dhT.size(1), GH = xw.size(2);
  auto opts = xw.options();
  Tensor dxw = at::empty({Tn, B, GH}, opts);
  Tensor dh0 = at::empty({B, H}, opts);
  const T* dop = ptr_or_null<T>(dout);
  const T* rm = ptr_or_null<T>(rmask);
  const T* vd = ptr_or_null<T>(valid);
  const T* zhp = ptr_or_null<T>(zh);
  const T* xwp = xw.data_ptr<T>();
  const T* hrp = hr_all.data_ptr<T>();
  const T* dhTp = dhT.data_ptr<T>();
  T* dxp = dxw.data_ptr<T>();
  T* dh0p = dh0.data_ptr<T>();
  at::parallel_for(0, B, grain(Tn * H), [&](int64_t b0, int64_t b1) {
    // per row of this thread: d (what reaches h'), part (what reaches h past the step:
    // lengths, zoneout) and rec (d ⊙ a of the step after, before the dropout mask)
    std::vector<T> work(3 * H * (b1 - b0));
    for (int64_t b = b0; b < b1; ++b) {
      T* part = work.data() + 3 * H * (b - b0) + H;
      std::memcpy(part, dhTp + b * H, sizeof(T) * H);
      std::fill(part + H, part + 2 * H, T(0));
    }
    for (int64_t s = 0; s < Tn; ++s) {  // step by step over this thread's rows
      const int64_t t = reverse ? s : Tn - 1 - s;
      for (int64_t b = b0; b < b1; ++b) {
        T* __restrict d = work.data() + 3 * H * (b - b0);
        T* __restrict part = d + H;
        T* __restrict rec = d + 2 * H;
        const T* __restrict mb = rm ? rm + b * H : nullptr;
        const int64_t r = (t * B + b) * H;
        T* __restrict dx = dxp + (t * B + b) * GH;
        if (!state_row_backward(d, part, static_cast<const T*>(rec), mb, dop ? dop + r : nullptr,
                                zhp ? zhp + r : nullptr, vd ? vd[t * B + b] : T(1), H)) {
          std::fill(dx, dx + GH, T(0));
          std::fill(rec, rec + H, T(0));
          continue;
        }
        const T* __restrict x = xwp + (t * B + b) * GH;
        const T* __restrict hrb = hrp + r;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const Gates<T> g = gates<KIND, CAND>(x, H, j);
          const T dd = d[j];
          const T da = dd * hrb[j];
          rec[j] = dd * g.f;
          if (KIND == kMinGRU) {
            const T dz = dd * g.ht - da;
            dx[j] = dz * g.i * (T(1) - g.i);
          } else if (KIND == kMinLSTM) {
            const T dn = (da - dd * g.ht) * g.f * g.i;
            dx[j] = dn * g.fc;
            dx[H + j] = -dn * g.ic;
          } else {
            dx[j] = da * g.f * (T(1) - g.f);
            dx[H + j] = dd * g.ht * g.i * (T(1) - g.i);
          }
          dx[GH - H + j] = candidate_grad<CAND>(g.xh, g.ht, dd * g.i);
        }
      }
    }
    for (int64_t b = b0; b < b1; ++b) {
      const T* part = work.data() + 3 * H * (b - b0) + H;
      const T* rec = part + H;
      const T* mb = rm ? rm + b * H : nullptr;
      T* __restrict out0 = dh0p + b * H;
      for (int64_t j = 0; j < H; ++j) out0[j] = part[j] + (mb ? rec[j] * mb[j] : rec[j]);
    }
  });
  return {{"dxw", dxw}, {"dh0", dh0}};
}

// The (kind, candidate) instantiations, chosen once per call.
template <typename T, int64_t KIND>
Named forward_cand(int64_t cand, const Tensor& xw, const Tensor& h0, const c10::optional<Tensor>& rmask,
                   const c10::optional<Tensor>& valid, const c10::optional<Tensor>& zh, bool reverse, bool keep) {
  if (cand == kCandTanh) return forward_impl<T, KIND, kCandTanh>(xw, h0, rmask, valid, zh, reverse, keep);
  if (cand == kCandG) return forward_impl<T, KIND, kCandG>(xw, h0, rmask, valid, zh, reverse, keep);
  return forward_impl<T, KIND, kCandIdentity>(xw, h0, rmask, valid, zh, reverse, keep);
}

template <typename T>
Named forward_any(int64_t kind, int64_t cand, const Tensor& xw, const Tensor& h0, const c10::optional<Tensor>& rmask,
                  const c10::optional<Tensor>& valid, const c10::optional<Tensor>& zh, bool reverse, bool keep) {
  if (kind == kMinGRU) return forward_cand<T, kMinGRU>(cand, xw, h0, rmask, valid, zh, reverse, keep);
  if (kind == kMinLSTM) return forward_cand<T, kMinLSTM>(cand, xw, h0, rmask, valid, zh, reverse, keep);
  return forward_cand<T, kMinLSTMPlain>(cand, xw, h0, rmask, valid, zh, reverse, keep);
}

template <typename T, int64_t KIND>
Named backward_cand(int64_t cand, const c10::optional<Tensor>& dout, const Tensor& dhT, const Tensor& xw,
                    const Tensor& hr, const c10::optional<Tensor>& rmask, const c10::optional<Tensor>& valid,
                    const c10::optional<Tensor>& zh, bool reverse) {
  if (cand == kCandTanh) return backward_impl<T, KIND, kCandTanh>(dout, dhT, xw, hr, rmask, valid, zh, reverse);
  if (cand == kCandG) return backward_impl<T, KIND, kCandG>(dout, dhT, xw, hr, rmask, valid, zh, reverse);
  return backward_impl<T, KIND, kCandIdentity>(dout, dhT, xw, hr, rmask, valid, zh, reverse);
}

template <typename T>
Named backward_any(int64_t kind, int64_t cand, const c10::optional<Tensor>& dout, const Tensor& dhT,
                   const Tensor& xw, const Tensor& hr, const c10::optional<Tensor>& rmask,
                   const c10::optional<Tensor>& valid, const c10::optional<Tensor>& zh, bool reverse) {
  if (kind == kMinGRU) return backward_cand<T, kMinGRU>(cand, dout, dhT, xw, hr, rmask, valid, zh, reverse);
  if (kind == kMinLSTM) return backward_cand<T, kMinLSTM>(cand, dout, dhT, xw, hr, rmask, valid, zh, reverse);
  return backward_cand<T, kMinLSTMPlain>(cand, dout, dhT, xw, hr, rmask, valid, zh, reverse);
}

void check_width(const Tensor& xw, int64_t kind, int64_t H) {
  const int64_t G = kind == kMinGRU ? 2 : 3;
  TORCH_CHECK(xw.dim() == 3 && xw.size(2) == G * H, "rnnkit native minGRU/minLSTM: xw must be (T, B, ", G,
              "·H) = (T, B, ", G * H, "), got ", xw.sizes());
}

}  // namespace

Named minrnn_forward(Tensor xw, Tensor h0, c10::optional<Tensor> rmask, c10::optional<Tensor> valid,
                     c10::optional<Tensor> zh, const std::string& kind, const std::string& candidate,
                     bool reverse, bool keep) {
  for (auto* p : {&xw, &h0}) check(*p, "argument", xw);
  check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw); check_opt(zh, "zoneout", xw);
  const int64_t k = kind_from_name(kind), c = candidate_from_name(candidate);
  check_width(xw, k, h0.size(1));
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat) return forward_any<float>(k, c, xw, h0, rmask, valid, zh, reverse, keep);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native minGRU/minLSTM: float32 or float64 only");
  return forward_any<double>(k, c, xw, h0, rmask, valid, zh, reverse, keep);
}

Named minrnn_backward(c10::optional<Tensor> dout, Tensor dhT, const Named& saved, c10::optional<Tensor> rmask,
                      c10::optional<Tensor> valid, c10::optional<Tensor> zh, const std::string& kind,
                      const std::string& candidate, bool reverse) {
  const Tensor& xw = entry(saved, "xw");
  const Tensor& hr = entry(saved, "hr");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dhT, &xw, &hr}) check(*p, "argument", xw);
  check_opt(dout, "dout", xw); check_opt(rmask, "rmask", xw); check_opt(valid, "valid", xw);
  check_opt(zh, "zoneout", xw);
  const int64_t k = kind_from_name(kind), c = candidate_from_name(candidate);
  check_width(xw, k, dhT.size(1));
  at::NoGradGuard no_grad;
  if (xw.scalar_type() == at::kFloat)
    return backward_any<float>(k, c, dout, dhT, xw, hr, rmask, valid, zh, reverse);
  TORCH_CHECK(xw.scalar_type() == at::kDouble, "rnnkit native minGRU/minLSTM: float32 or float64 only");
  return backward_any<double>(k, c, dout, dhT, xw, hr, rmask, valid, zh, reverse);
}

}  // namespace rnnkit_native
