// The native loops' large results (kept gates and recurrent rows, gradients) from buffers
// kept between calls: used by the layer-norm loops (lstm_ln.cpp, gru_ln.cpp).
//
// A fresh tensor of tens of megabytes is mapped from the OS page by page on first touch
// (glibc serves blocks over 32 MB with mmap, new every time), which costs about as much as a
// pass of arithmetic over it (the engine's pool does the same for the input projection:
// rnnkit/engine/bptt.py, _BufferPool). The pool keeps its tensors and hands out aliases of
// them (new tensors on the same storage); a kept buffer is handed out again only when its
// storage has no other user (autograd has released the step that used it, no view of it is
// left). At most kPoolSize are kept (one pool for all the loops); when full, an unused one of
// another shape is replaced. tests/test_native_pool.py checks both: reuse, and no reuse while
// a view lives.

#pragma once

#include "common.h"

#include <ATen/ops/alias.h>

#include <mutex>

namespace rnnkit_native {

constexpr size_t kPoolSize = 16;

inline Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  static std::mutex mu;
  static auto* kept = new std::vector<Tensor>();  // never destroyed: no tensor freed at exit
  std::lock_guard<std::mutex> lock(mu);
  // The pool's own tensors never leave it: it hands out an alias (a new tensor on the same
  // storage), so a kept tensor is free when its storage has no other user. (Handing out the
  // kept tensor itself would never come back free: once Python has wrapped a tensor that C++
  // still refers to, the wrapper is preserved with it and keeps its reference.)
  auto unused = [](const Tensor& t) { return t.storage().use_count() == 1; };
  for (const Tensor& t : *kept) {
    if (t.sizes() == shape && t.scalar_type() == opts.dtype().toScalarType() && unused(t)) return t.alias();
  }
  Tensor fresh = at::empty(shape, opts);
  if (kept->size() < kPoolSize) {
    kept->push_back(fresh);
  } else {
    for (Tensor& t : *kept) {
      if (unused(t)) {
        t = fresh;
        break;
      }
    }
  }
  return fresh.alias();
}

}  // namespace rnnkit_native
