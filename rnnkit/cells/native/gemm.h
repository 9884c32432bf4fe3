// rnnkit's per-step products with one fixed weight, C = beta C + A · op(W), called directly on
// the buffers: BLAS (the sgemm_ / dgemm_ PyTorch itself calls, looked up at run time) with no
// tensor and no dispatcher call per step, and, where MKL's packed GEMM is there (float32), the
// weight packed once per loop instead of by every call (the packing of a (4H, H) weight costs
// a good part of a small-batch step's product). Used by the forward-only loops (infer.cpp) and
// the training loops of the LSTM (lstm.cpp, lstm_ln.cpp) and the layer-norm GRU (gru_ln.cpp).
// Without those symbols, or while a Python dispatch mode watches (`rnnkit bench`'s record of
// the products), every product goes through ATen's addmm.

#pragma once

#include "common.h"

#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <dlfcn.h>

#include <type_traits>

namespace rnnkit_native {

// The BLAS that PyTorch itself calls (sgemm_ / dgemm_, the Fortran interface), found at run
// time in the loaded libtorch_cpu; null where that library exports none.
template <typename T>
using gemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*,
                         const int*, const T*, const int*, const T*, T*, const int*);

inline void* blas_symbol(const char* name) {
  void* f = dlsym(RTLD_DEFAULT, name);
  if (f == nullptr) {
    void* lib = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (lib != nullptr) f = dlsym(lib, name);
  }
  return f;
}

template <typename T> gemm_fn<T> blas_gemm();
template <> inline gemm_fn<float> blas_gemm<float>() {
  static const auto f = reinterpret_cast<gemm_fn<float>>(blas_symbol("sgemm_"));
  return f;
}
template <> inline gemm_fn<double> blas_gemm<double>() {
  static const auto f = reinterpret_cast<gemm_fn<double>>(blas_symbol("dgemm_"));
  return f;
}

// Whether a Python dispatch mode (a TorchDispatchMode, e.g. `rnnkit bench`'s record of the
// products) is watching: then every GEMM goes through ATen, where the mode sees it.
inline bool watched() { return c10::impl::TorchDispatchModeTLS::any_modes_set(); }

// C (M, N) = beta C + A (M, K) · op(W), all row-major with row strides ldc, lda, ldw; W is
// stored (N, K) as a torch.nn weight (op = transpose: C = A Wᵀ) when w_nk, else (K, N)
// (C = A W). In BLAS's column-major terms Cᵀ = op(W)ᵀ Aᵀ. beta = 0 ignores C.
template <typename T>
inline void gemm_rm(T* C, int64_t ldc, const T* A, int64_t lda, const T* W, int64_t ldw, int64_t M, int64_t K,
                    int64_t N, T beta, bool w_nk) {
  const auto gemm = watched() ? nullptr : blas_gemm<T>();
  if (gemm != nullptr) {
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(ldw), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    const T one = T(1);
    gemm(w_nk ? "T" : "N", "N", &m, &n, &k, &one, W, &la, A, &lb, &beta, C, &lc);
    return;
  }
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  Tensor w = w_nk ? at::from_blob(const_cast<T*>(W), {N, K}, {ldw, 1}, opts).t()
                  : at::from_blob(const_cast<T*>(W), {K, N}, {ldw, 1}, opts);
  at::addmm_out(c, c, at::from_blob(const_cast<T*>(A), {M, K}, {lda, 1}, opts), w, beta, 1);
}

// C (M, N) = beta C + A (M, K) · Wᵀ, with W (N, K) as a torch.nn weight is stored.
template <typename T>
inline void gemm_nt(T* C, int64_t ldc, const T* A, int64_t lda, const T* W, int64_t ldw, int64_t M, int64_t K,
                    int64_t N, T beta) {
  gemm_rm<T>(C, ldc, A, lda, W, ldw, M, K, N, beta, true);
}

// MKL's packed GEMM (cblas_sgemm_pack / cblas_sgemm_compute, float only), null where the
// BLAS has none.
using pack_size_fn = size_t (*)(int, int, int, int);
using pack_fn = void (*)(int, int, int, int, int, int, float, const float*, int, float*);
using compute_fn = void (*)(int, int, int, int, int, int, const float*, int, const float*, int, float, float*, int);
enum : int { kColMajor = 102, kNoTrans = 111, kTrans = 112, kPacked = 151, kAMatrix = 161 };

struct PackedApi {
  pack_size_fn size = nullptr;
  pack_fn pack = nullptr;
  compute_fn compute = nullptr;
  bool ok() const { return size && pack && compute; }
};

inline const PackedApi& packed_api() {
  static const PackedApi api = [] {
    PackedApi a;
    a.size = reinterpret_cast<pack_size_fn>(blas_symbol("cblas_sgemm_pack_get_size"));
    a.pack = reinterpret_cast<pack_fn>(blas_symbol("cblas_sgemm_pack"));
    a.compute = reinterpret_cast<compute_fn>(blas_symbol("cblas_sgemm_compute"));
    return a;
  }();
  return api;
}

// C (M, N) = beta C + A (M, K) · op(W) for one weight W and a fixed M, run many times (once
// per step): packed once where MKL's packed GEMM is there (float), else gemm_rm. W is stored
// (N, K) (a torch.nn weight, C = A Wᵀ) when w_nk, else (K, N) (C = A W).
template <typename T>
struct WeightGemm {
  Tensor weight;  // holds W's storage
  const T* W = nullptr;
  int64_t N = 0, K = 0, ldw = 0, M = 0;
  bool w_nk = true;
  Tensor packed;  // bytes

  WeightGemm() = default;
  // W: from row `first` of `weight` (row stride ld): N rows of K when w_nk, else K rows of N
  WeightGemm(const Tensor& w, int64_t first, int64_t n, int64_t k, int64_t ld, int64_t m, bool nk = true)
      : weight(w), W(w.data_ptr<T>() + first * ld), N(n), K(k), ldw(ld), M(m), w_nk(nk) {
    if constexpr (std::is_same_v<T, float>) {
      const auto& api = packed_api();
      if (api.ok() && W != nullptr) {
        const size_t bytes = api.size(kAMatrix, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K));
        packed = at::empty({static_cast<int64_t>(bytes / sizeof(float) + 16)}, at::kFloat);
        api.pack(kColMajor, kAMatrix, w_nk ? kTrans : kNoTrans, static_cast<int>(N), static_cast<int>(M),
                 static_cast<int>(K), 1.0f, W, static_cast<int>(ldw), packed.data_ptr<float>());
      }
    }
  }

  void operator()(T* C, int64_t ldc, const T* A, int64_t lda, T beta) const {
    if constexpr (std::is_same_v<T, float>) {
      if (packed.defined() && !watched()) {
        packed_api().compute(kColMajor, kPacked, kNoTrans, static_cast<int>(N), static_cast<int>(M),
                             static_cast<int>(K), packed.data_ptr<float>(), static_cast<int>(ldw), A,
                             static_cast<int>(lda), beta, C, static_cast<int>(ldc));
        return;
      }
    }
    gemm_rm<T>(C, ldc, A, lda, W, ldw, M, K, N, beta, w_nk);
  }
};

}  // namespace rnnkit_native
