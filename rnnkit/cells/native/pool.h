// The native loops' large results (kept gates and recurrent rows, gradients) from buffers
// kept between calls: used by the layer-norm loops (lstm_ln.cpp, gru_ln.cpp).
//
// A fresh tensor of tens of megabytes is mapped from the OS page by page on first touch
// (glibc serves blocks over 32 MB with mmap, new every time), which costs about as much as a
// pass of arithmetic over it (the engine's pool does the same for the input projection:
// rnnkit/engine/bptt.py, _BufferPool). A kept buffer is handed out again only when nothing
// else refers to its tensor or its storage (autograd has released the step that used it); at
// most kPoolSize are kept (one pool for all the loops), an unused one of another shape is
// replaced when full.

#pragma once

#include "common.h"

#include <mutex>

namespace rnnkit_native {

constexpr size_t kPoolSize = 16;

inline Tensor pooled_empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
  static std::mutex mu;
  static auto* kept = new std::vector<Tensor>();  // never destroyed: no tensor freed at exit
  std::lock_guard<std::mutex> lock(mu);
  auto unused = [](const Tensor& t) { return t.use_count() == 1 && t.storage().use_count() == 1; };
  for (const Tensor& t : *kept) {
    if (t.sizes() == shape && t.scalar_type() == opts.dtype().toScalarType() && unused(t)) return t;
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
  return fresh;
}

}  // namespace rnnkit_native
