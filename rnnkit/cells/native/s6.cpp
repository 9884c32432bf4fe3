// rnnkit's native S6 time loop (rnnkit/cells/s6.py): the forward and the hand-written BPTT.
// Entry points and shapes: s6.h. No GEMM per step and no coupling between sequences: the
// rows (sequences) are split among the threads once, and each thread runs the steps over its
// rows; per row and step the H·N states are one contiguous pass (the n loop vectorizes). The
// forward keeps the state every kBlock steps; the backward recomputes the others, a block at
// a time.

#include "s6.h"

namespace rnnkit_native {
namespace {

//: the steps between two kept states: the forward keeps s every kBlock steps, and the backward
//: recomputes the states inside a block from the state entering it (a block's states,
//: kBlock·H·N per row, stay in the cache; the (T, B, H·N) states of every step would not, and
//: a fresh tensor of that size costs more in page faults than the recomputation)
constexpr int64_t kBlock = 16;

// One step of one row: for every channel h
//   e = Δ_h x_h,  s'[h, n] = exp(Δ_h A_hn) s[h, n] + e B_n,  y_h = Σ_n C_n s'[h, n] + D_h x_h
// s_in and s_out may be the same buffer (each element is read before it is written); y may be
// null (the backward's recomputation needs only s').
template <typename T>
RNNKIT_INLINE void step_row(const T* __restrict x, const T* __restrict d, const T* __restrict Ap,
                            const T* __restrict Dp, int64_t H, int64_t N, int64_t R, const T* s_in, T* s_out,
                            T* __restrict y) {
  const T* __restrict Bn = x + H + R;
  const T* __restrict Cn = Bn + N;
  for (int64_t h = 0; h < H; ++h) {
    const T dth = d[h], e = dth * x[h];
    const T* __restrict Ah = Ap + h * N;
    const T* si = s_in + h * N;
    T* so = s_out + h * N;
    T acc = T(0);
#pragma omp simd reduction(+ : acc)
    for (int64_t n = 0; n < N; ++n) {
      const T sn = exp_f(dth * Ah[n]) * si[n] + e * Bn[n];  // s' = exp(Δ A) ⊙ s + Δ x B
      so[n] = sn;
      acc += Cn[n] * sn;  // y = Σ_n C_n s_n
    }
    if (y) y[h] = acc + Dp[h] * x[h];  // + D x
  }
}

// Forward, step by step over this thread's rows; past a sequence's length s and y stay and
// the output is 0. When keep: "s_block" (⌈T/kBlock⌉, B, H·N), the state entering every
// kBlock-th step in processing order.
template <typename T>
Named forward_impl(const Tensor& u, const Tensor& dt, const Tensor& A, const Tensor& D, const Tensor& y0,
                   const Tensor& s0, const c10::optional<Tensor>& valid, int64_t R, bool reverse, bool keep) {
  const int64_t Tn = u.size(0), B = u.size(1), G = u.size(2), H = A.size(0), N = A.size(1), HN = H * N;
  const int64_t nblocks = (Tn + kBlock - 1) / kBlock;
  auto opts = u.options();
  Tensor out = at::empty({Tn, B, H}, opts);
  Tensor y = y0.clone();
  Tensor s = s0.clone();
  Tensor s_block = keep ? at::empty({nblocks, B, HN}, opts) : Tensor();
  const T* vd = ptr_or_null<T>(valid);
  const T* up = u.data_ptr<T>();
  const T* dtp = dt.data_ptr<T>();
  const T* Ap = A.data_ptr<T>();
  const T* Dp = D.data_ptr<T>();
  T* yp = y.data_ptr<T>();
  T* sp = s.data_ptr<T>();
  T* op = out.data_ptr<T>();
  T* sbp = keep ? s_block.data_ptr<T>() : nullptr;
  at::parallel_for(0, B, grain(Tn * HN), [&](int64_t b0, int64_t b1) {
    for (int64_t st = 0; st < Tn; ++st) {
      const int64_t t = reverse ? Tn - 1 - st : st;
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t row = t * B + b;
        T* sb = sp + b * HN;
        if (sbp && st % kBlock == 0) std::memcpy(sbp + ((st / kBlock) * B + b) * HN, sb, sizeof(T) * HN);
        T* __restrict ob = op + row * H;
        if (vd && vd[row] == T(0)) {  // past the length: the state stays
          std::fill(ob, ob + H, T(0));
          continue;
        }
        step_row(up + row * G, dtp + row * H, Ap, Dp, H, N, R, sb, sb, ob);
        std::memcpy(yp + b * H, ob, sizeof(T) * H);
      }
    }
  });
  if (!keep) return {{"out", out}, {"y", y}, {"s", s}};
  return {{"out", out}, {"y", y}, {"s", s}, {"s_block", s_block}};
}

// Backward, per row and block of kBlock steps in reverse processing order: the block's states
// again from the kept state entering it, then its steps in reverse, with ds the gradient
// reaching s_t (from step t+1) and gy the one reaching y_t (the output's, plus the final y's
// at the row's last step):
//   ds += gy ⊗ C,  dC += Σ_h gy_h s_t[h, :],  dD += gy ⊙ x,  dx = gy ⊙ D
//   a = exp(Δ A):  dΔA = ds ⊙ s_{t-1} ⊙ a,  dΔ = Σ_n dΔA ⊙ A,  dA += dΔA ⊙ Δ
//   e = Δ x:  de = Σ_n ds ⊙ B,  dB = Σ_h ds ⊙ e,  dΔ += de ⊙ x,  dx += de ⊙ Δ
//   ds_{t-1} = ds ⊙ a
// past the length ds and the final y's gradient pass through, and d(u), dΔ are 0.
template <typename T>
Named backward_impl(const c10::optional<Tensor>& dout, const Tensor& dyT, const Tensor& dsT, const Tensor& u,
                    const Tensor& dt, const Tensor& s_block, const Tensor& A, const Tensor& D,
                    const c10::optional<Tensor>& valid, int64_t R, bool reverse) {
  const int64_t Tn = u.size(0), B = u.size(1), G = u.size(2), H = A.size(0), N = A.size(1), HN = H * N;
  const int64_t nblocks = (Tn + kBlock - 1) / kBlock;
  auto opts = u.options();
  Tensor du = at::empty({Tn, B, G}, opts);
  Tensor ddt = at::empty({Tn, B, H}, opts);
  Tensor dA = at::zeros({B, H, N}, opts);
  Tensor dD = at::zeros({B, H}, opts);
  Tensor dy0 = dyT.clone();
  Tensor ds0 = dsT.clone();
  const T* dop = ptr_or_null<T>(dout);
  const T* vd = ptr_or_null<T>(valid);
  const T* up = u.data_ptr<T>();
  const T* dtp = dt.data_ptr<T>();
  const T* sbp = s_block.data_ptr<T>();
  const T* Ap = A.data_ptr<T>();
  const T* Dp = D.data_ptr<T>();
  T* dup = du.data_ptr<T>();
  T* ddtp = ddt.data_ptr<T>();
  T* dAp = dA.data_ptr<T>();
  T* dDp = dD.data_ptr<T>();
  T* dyp = dy0.data_ptr<T>();  // per row: the final y's gradient until the row's last step takes it
  T* dsp = ds0.data_ptr<T>();  // per row: the gradient reaching s_t, carried back to s_0
  at::parallel_for(0, B, grain(Tn * HN), [&](int64_t b0, int64_t b1) {
    std::vector<T> states((kBlock + 1) * HN);  // a block's states: [k] enters its k-th step
    for (int64_t j = nblocks - 1; j >= 0; --j) {
      const int64_t first = j * kBlock, last = std::min(Tn, first + kBlock);  // processing steps
      for (int64_t b = b0; b < b1; ++b) {
        std::memcpy(states.data(), sbp + (j * B + b) * HN, sizeof(T) * HN);
        for (int64_t st = first; st < last; ++st) {  // the block's states again
          const int64_t row = (reverse ? Tn - 1 - st : st) * B + b;
          const T* s_in = states.data() + (st - first) * HN;
          T* s_out = states.data() + (st - first + 1) * HN;
          if (vd && vd[row] == T(0)) {
            std::memcpy(s_out, s_in, sizeof(T) * HN);
          } else {
            step_row<T>(up + row * G, dtp + row * H, Ap, Dp, H, N, R, s_in, s_out, nullptr);
          }
        }
        T* __restrict dyb = dyp + b * H;
        T* __restrict dsb = dsp + b * HN;
        T* __restrict dAb = dAp + b * HN;
        T* __restrict dDb = dDp + b * H;
        for (int64_t st = last - 1; st >= first; --st) {
          const int64_t row = (reverse ? Tn - 1 - st : st) * B + b;
          T* __restrict dx = dup + row * G;
          T* __restrict dd = ddtp + row * H;
          if (vd && vd[row] == T(0)) {
            std::fill(dx, dx + G, T(0));
            std::fill(dd, dd + H, T(0));
            continue;
          }
          const T* __restrict x = up + row * G;
          const T* __restrict Bn = x + H + R;
          const T* __restrict Cn = Bn + N;
          const T* __restrict d = dtp + row * H;
          const T* __restrict s_prev = states.data() + (st - first) * HN;
          const T* __restrict s_t = s_prev + HN;
          const T* __restrict go = dop ? dop + row * H : nullptr;
          T* __restrict dBn = dx + H + R;
          T* __restrict dCn = dBn + N;
          std::fill(dx + H, dx + G, T(0));
          for (int64_t h = 0; h < H; ++h) {
            const T gy = (go ? go[h] : T(0)) + dyb[h];
            dyb[h] = T(0);
            const T xh = x[h], dth = d[h], e = dth * xh;
            dDb[h] += gy * xh;  // y = … + D x
            const T* __restrict Ah = Ap + h * N;
            const T* __restrict sh = s_t + h * N;
            const T* __restrict ph = s_prev + h * N;
            T* __restrict dsh = dsb + h * N;
            T* __restrict dAh = dAb + h * N;
            T ddt_h = T(0), de = T(0);
#pragma omp simd reduction(+ : ddt_h, de)
            for (int64_t n = 0; n < N; ++n) {
              const T dsn = dsh[n] + gy * Cn[n];  // y = Σ_n C_n s_n
              dCn[n] += gy * sh[n];
              const T a = exp_f(dth * Ah[n]);
              const T dza = dsn * ph[n] * a;  // d(Δ A): a = exp(Δ A), s' = a s + e B
              ddt_h += dza * Ah[n];
              dAh[n] += dza * dth;
              de += dsn * Bn[n];
              dBn[n] += dsn * e;
              dsh[n] = dsn * a;
            }
            dd[h] = ddt_h + de * xh;  // e = Δ x
            dx[h] = gy * Dp[h] + de * dth;
          }
        }
      }
    }
  });
  return {{"du", du}, {"ddt", ddt}, {"dA", dA}, {"dD", dD}, {"dy0", dy0}, {"ds0", ds0}};
}

void check_shapes(const Tensor& u, const Tensor& dt, const Tensor& A, const Tensor& D, int64_t R) {
  TORCH_CHECK(A.dim() == 2, "rnnkit native S6: A must be (H, N), got ", A.sizes());
  const int64_t H = A.size(0), N = A.size(1);
  TORCH_CHECK(u.dim() == 3 && u.size(2) == H + R + 2 * N, "rnnkit native S6: u must be (T, B, H + R + 2N) = (T, B, ",
              H + R + 2 * N, "), got ", u.sizes());
  TORCH_CHECK(dt.dim() == 3 && dt.size(0) == u.size(0) && dt.size(1) == u.size(1) && dt.size(2) == H,
              "rnnkit native S6: dt must be (T, B, H), got ", dt.sizes());
  TORCH_CHECK(D.dim() == 1 && D.size(0) == H, "rnnkit native S6: D must be (H,), got ", D.sizes());
}

}  // namespace

Named s6_forward(Tensor u, Tensor dt, Tensor A, Tensor D, Tensor y0, Tensor s0, c10::optional<Tensor> valid,
                 int64_t dt_rank, bool reverse, bool keep) {
  for (auto* p : {&u, &dt, &A, &D, &y0, &s0}) check(*p, "argument", u);
  check_opt(valid, "valid", u);
  check_shapes(u, dt, A, D, dt_rank);
  at::NoGradGuard no_grad;
  if (u.scalar_type() == at::kFloat) return forward_impl<float>(u, dt, A, D, y0, s0, valid, dt_rank, reverse, keep);
  TORCH_CHECK(u.scalar_type() == at::kDouble, "rnnkit native S6: float32 or float64 only");
  return forward_impl<double>(u, dt, A, D, y0, s0, valid, dt_rank, reverse, keep);
}

Named s6_backward(c10::optional<Tensor> dout, Tensor dyT, Tensor dsT, const Named& saved, Tensor A, Tensor D,
                  c10::optional<Tensor> valid, int64_t dt_rank, bool reverse) {
  const Tensor& u = entry(saved, "u");
  const Tensor& dt = entry(saved, "dt");
  const Tensor& s_block = entry(saved, "s_block");
  for (const Tensor* p : std::initializer_list<const Tensor*>{&dyT, &dsT, &u, &dt, &s_block, &A, &D})
    check(*p, "argument", u);
  check_opt(dout, "dout", u); check_opt(valid, "valid", u);
  check_shapes(u, dt, A, D, dt_rank);
  at::NoGradGuard no_grad;
  if (u.scalar_type() == at::kFloat)
    return backward_impl<float>(dout, dyT, dsT, u, dt, s_block, A, D, valid, dt_rank, reverse);
  TORCH_CHECK(u.scalar_type() == at::kDouble, "rnnkit native S6: float32 or float64 only");
  return backward_impl<double>(dout, dyT, dsT, u, dt, s_block, A, D, valid, dt_rank, reverse);
}

}  // namespace rnnkit_native
