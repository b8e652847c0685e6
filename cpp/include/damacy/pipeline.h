// damacy::Pipeline: random crops of Zarr arrays as batched torch tensors (C++ libtorch API).
//
//   auto cfg = damacy::Config::from_json(R"({"samples_per_batch": 8, "sample_shape": [64,128,128]})");
//   damacy::Pipeline pipe(cfg);
//   pipe.push({"/data/vol.zarr", {{0, 64}, {0, 128}, {0, 128}}});   // false: window full, pop first
//   at::Tensor batch = pipe.pop();   // [8, 64, 128, 128] f32
//
// Every failure throws the damacy::Error subclass of its status (damacy/errors.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "damacy/config.h"
#include "damacy/errors.h"

namespace damacy {

namespace ffi {
struct Pipeline;  // the Rust pipeline (rust/src/ffi/mod.rs); opaque here
}  // namespace ffi

/// One crop request: an array and an axis-aligned box, one half-open (start, stop) per
/// dimension; its extent must equal the config's sample_shape.
struct Sample {
  std::string uri;
  std::vector<std::pair<std::int64_t, std::int64_t>> aabb;
};

/// A batch together with the samples it was made from.
struct BatchWithSamples {
  at::Tensor tensor;
  /// `[{"uri": .., "aabb": [[start, stop], ..]}, ..]`, in batch order.
  std::string samples_json;
};

/// A running pipeline. Owns the Rust pipeline (its worker threads, caches and buffer pool);
/// closes it on destruction. push, pop, pending_samples, stats and close may be called from
/// any thread. Move-only.
class Pipeline {
 public:
  /// Validates `config`, fixes every resource and starts the workers.
  /// @throws InvalidArgument, BudgetExceeded, OutOfMemory.
  explicit Pipeline(const Config& config);
  /// Same, from a JSON object of config fields (Config::from_json).
  explicit Pipeline(std::string_view config_json);
  ~Pipeline();
  Pipeline(Pipeline&&) noexcept;
  Pipeline& operator=(Pipeline&&) noexcept;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  /// Offers one sample; false when the lookahead window is full (pop first).
  /// @throws InvalidArgument (bad box), ShutdownError (closed).
  bool push(const Sample& sample);
  /// Same, with the box as separate starts and stops.
  bool push(std::string_view uri, const std::vector<std::int64_t>& starts,
            const std::vector<std::int64_t>& stops);

  /// The next batch in push order, `[samples_per_batch, *sample_shape]` of the config's dtype
  /// on the config's device; waits at most `timeout_s` (negative: the config's
  /// pop_timeout_s). On the CPU the tensor is a view of a pipeline buffer, which returns to
  /// the pipeline's pool when the last reference to the tensor's storage dies.
  /// @throws TryAgain (timed out, or nothing pushed), the batch's own error (the pipeline
  /// goes on with the next batch), ShutdownError.
  at::Tensor pop(double timeout_s = -1.0);
  /// pop() plus the batch's samples.
  BatchWithSamples pop_with_samples(double timeout_s = -1.0);

  /// Samples pushed but not yet popped as part of a batch.
  std::uint64_t pending_samples() const;
  /// Statistics as a JSON object (cache hits and misses, bytes, timings).
  std::string stats() const;
  /// Stops the workers; returns also with work in flight. Idempotent.
  void close();

  /// @throws ShutdownError on a moved-from pipeline.
  const Config& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace damacy
