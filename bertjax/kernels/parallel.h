// Shared by bertjax's CPU kernels: work split over XLA's intra-op thread pool, and
// scratch buffers kept between calls.
#ifndef BERTJAX_KERNELS_PARALLEL_H_
#define BERTJAX_KERNELS_PARALLEL_H_

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace bertjax {

// Runs body(i) for i in [0, count) on the caller and XLA's intra-op threads, chunks
// handed out by an atomic counter; returns once every chunk is done. A helper that
// starts late (its thread busy elsewhere) finds no chunk left and touches only the
// shared state, so the caller never waits for it to be scheduled.
struct Chunks {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  int64_t count = 0, chunk = 1, chunks = 0;
  const std::function<void(int64_t)>* body = nullptr;

  void Work() {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
      for (int64_t i = c * chunk; i < std::min(count, (c + 1) * chunk); ++i) (*body)(i);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

inline void ParallelFor(xla::ffi::ThreadPool& pool, int64_t count, int64_t chunk,
                 const std::function<void(int64_t)>& body) {
  auto state = std::make_shared<Chunks>();
  state->count = count;
  state->chunk = chunk;
  state->chunks = (count + chunk - 1) / chunk;
  state->body = &body;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), state->chunks) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([state]() { state->Work(); });
  state->Work();
  for (int spins = 0; state->done.load(std::memory_order_acquire) < state->chunks; ++spins) {
    if (spins < 4096) {
      _mm_pause();
    } else {
      std::this_thread::yield();  // a helper mid-chunk lost its core: let it run
    }
  }
}

// Scratch buffers kept between calls (no allocation or zeroing per product).
template <typename T>
inline T* Scratch(std::vector<T>& buffer, size_t size) {
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

}  // namespace bertjax

#endif  // BERTJAX_KERNELS_PARALLEL_H_
