// The native loops' large results (kept gates and recurrent rows, gradients) from buffers
// kept between calls: used by the layer-norm loops (lstm_ln.cpp, gru_ln.cpp) and the LSTM loop
// (lstm.cpp).
//
// A fresh tensor of tens of megabytes is mapped from the OS page by page on first touch
// (glibc serves blocks over 32 MB with mmap, new every time), which costs about as much as a
// pass of arithmetic over it (the engine's pool does the same for the input projection:
// rnnkit/engine/bptt.py, _BufferPool). The pool keeps its tensors and hands out new
// tensors on the same storage; a kept buffer is handed out again only when its
// storage has no other user (autograd has released the step that used it, no view of it is
// left). At most kPoolSize are kept (one pool for all the loops); when a shape finds none free,
// the free ones of other shapes are dropped, so the pool holds no more than the buffers of the
// shapes in use. tests/test_native_pool.py checks reuse, no reuse while a view lives, and that.

#pragma once

#include "common.h"

#include <ATen/ops/set.h>

#include <mutex>

namespace rnnkit_native {

constexpr size_t kPoolSize = 64;

struct Pool {
  std::mutex mu;
  std::vector<Tensor> kept;
};
inline Pool& pool() {
  static auto* p = new Pool();  // never destroyed: no tensor freed at exit
  return *p;
}

inline Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  // The pool's own tensors never leave it: it hands out a new tensor on the same storage (not
  // a view, which would keep the kept tensor alive with it), so a kept tensor is free when its
  // storage has no other user. (Handing out the kept tensor itself was measured never to come
  // back free: PyTorch preserves the Python wrapper of a tensor that C++ still refers to, and
  // the reuse test of tests/test_native_pool.py failed with every call a new buffer.)
  auto unused = [](const Tensor& t) { return t.storage().use_count() == 1; };
  auto share = [&](const Tensor& t) { return at::empty({0}, opts).set_(t.storage(), 0, t.sizes(), t.strides()); };
  for (const Tensor& t : p.kept) {
    if (t.sizes() == shape && t.scalar_type() == opts.dtype().toScalarType() && unused(t)) return share(t);
  }
  // none free of this shape: the free ones of other shapes are stale (a shape in steady use
  // finds its own), so they go, and the memory the pool holds stays that of the shapes in use
  p.kept.erase(std::remove_if(p.kept.begin(), p.kept.end(), unused), p.kept.end());
  Tensor fresh = at::empty(shape, opts);
  if (p.kept.size() < kPoolSize) p.kept.push_back(fresh);
  return share(fresh);
}

// The bytes of the buffers the pool keeps (in use or not).
inline int64_t pool_bytes() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  int64_t n = 0;
  for (const Tensor& t : p.kept) n += static_cast<int64_t>(t.nbytes());
  return n;
}

// Drops every kept buffer (those still in use live on with their users): `rnnkit bench`'s
// activation memory, which must see each step allocate what it holds.
inline void pool_clear() {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  p.kept.clear();
}

}  // namespace rnnkit_native
