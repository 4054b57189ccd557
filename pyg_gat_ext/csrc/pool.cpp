// Large CPU outputs of the kernels (pool.h): blocks of mapped memory that
// are kept once freed and handed out again, so that a training loop does
// not fault in every page of its large buffers at each step.
//
// glibc serves requests above 32 MiB (its largest mmap threshold) with a
// fresh mapping and returns it to the system on free: every use of such a
// buffer then faults in each 4 KiB page again, which costs about 0.25 ms
// per MB on the virtual machines measured (a fresh 43 MB tensor filled in
// 12 ms, a reused one in 0.8 ms). The blocks are 2 MiB-aligned and advised
// for transparent huge pages, which cut the faults 512-fold where the
// system grants them and make gathers of rows of the buffer (the projection
// that the attention ops read by edge) miss the TLB less: hence the pool
// from 8 MiB, below glibc's threshold too (op forward + backward at 8 x 8
// on 100k nodes, 26 MB rows: 78-87 -> 70-77 ms in interleaved runs).
#include "pool.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>
#include <mutex>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pyg_gat_ext {
namespace {

constexpr size_t kMinBytes = size_t(8) << 20;
constexpr size_t kAlign = size_t(2) << 20;
// Free blocks kept (the oldest are unmapped beyond this): a layer's
// forward and backward hold a few large buffers at once.
constexpr size_t kMaxFree = 8;

struct Block {
  void* data;
  size_t bytes;
};

class Pool {
 public:
  // A block of at least `bytes` (and at most a quarter more, so that a
  // small request does not hold a large block), or nullptr.
  Block take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      size_t best = free_.size();
      for (size_t k = 0; k < free_.size(); ++k) {
        const size_t b = free_[k].bytes;
        if (b >= bytes && b - bytes <= bytes / 4 &&
            (best == free_.size() || b < free_[best].bytes))
          best = k;
      }
      if (best < free_.size()) {
        const Block block = free_[best];
        free_.erase(free_.begin() + best);
        return block;
      }
    }
    const size_t size = (bytes + kAlign - 1) / kAlign * kAlign;
#if defined(__linux__)
    // Over-allocate by kAlign to start the block at a 2 MiB boundary.
    void* raw = mmap(nullptr, size + kAlign, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return {nullptr, 0};
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kAlign - 1) / kAlign * kAlign;
    if (aligned > start) munmap(raw, aligned - start);
    const uintptr_t end = start + size + kAlign;
    if (end > aligned + size)
      munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
    void* data = reinterpret_cast<void*>(aligned);
    madvise(data, size, MADV_HUGEPAGE);  // Advice only: ignore a refusal.
    return {data, size};
#else
    (void)size;
    return {nullptr, 0};
#endif
  }

  void give(Block block) {
    std::vector<Block> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      free_.push_back(block);
      while (free_.size() > kMaxFree) {
        drop.push_back(free_.front());
        free_.erase(free_.begin());
      }
    }
    for (const Block& b : drop) unmap(b);
  }

  size_t release() {
    std::vector<Block> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      drop.swap(free_);
    }
    size_t bytes = 0;
    for (const Block& b : drop) {
      bytes += b.bytes;
      unmap(b);
    }
    return bytes;
  }

 private:
  static void unmap(const Block& b) {
#if defined(__linux__)
    munmap(b.data, b.bytes);
#endif
  }

  std::mutex mutex_;
  std::vector<Block> free_;
};

// Never destroyed: tensors freed during interpreter shutdown still return
// their blocks to it.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

at::Tensor empty_pooled(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const size_t bytes = static_cast<size_t>(numel) * opts.dtype().itemsize();
  if (!opts.device().is_cpu() || bytes < kMinBytes)
    return at::empty(sizes, opts);
  const Block block = pool().take(bytes);
  if (block.data == nullptr) return at::empty(sizes, opts);
  return at::from_blob(
      block.data, sizes, [block](void*) { pool().give(block); }, opts);
}

int64_t release_pooled() { return static_cast<int64_t>(pool().release()); }

}  // namespace pyg_gat_ext

// For Python through ctypes (pyg_gat_ext.ops.empty_cache): an op without
// tensor arguments would have no dispatch key to go by.
extern "C" int64_t pyg_gat_ext_empty_cache() {
  return pyg_gat_ext::release_pooled();
}
