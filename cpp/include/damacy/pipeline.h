// damacy::Pipeline: random crops of Zarr arrays as batched torch tensors (C++ libtorch API).
//
//   auto cfg = damacy::Config::from_json(R"({"samples_per_batch": 8, "sample_shape": [64,128,128]})");
//   damacy::Pipeline pipe(cfg);
//   pipe.push({"/data/vol.zarr", {{0, 64}, {0, 128}, {0, 128}}});   // false: window full, pop first
//   std::size_t n = pipe.push(samples);   // a range of Samples: pushes until the window is full
//   at::Tensor batch = pipe.pop();        // [8, 64, 128, 128] f32
//   damacy::Batch b = pipe.pop_batch();   // the tensor and the samples it was made from
//
// Every failure throws the damacy::Error subclass of its status (damacy/errors.h). A problem
// with a sample (missing array, bad box, corrupt chunk, ...) never throws at push: it fails the
// sample's batch, at the pop of that batch, and the pipeline goes on with the next batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "damacy/config.h"
#include "damacy/errors.h"

namespace damacy {

namespace ffi {
struct Pipeline;  // the Rust pipeline (rust/src/ffi/api.rs); opaque here
}  // namespace ffi

/// One crop request: an array and an axis-aligned box, one half-open (start, stop) per
/// dimension; its extent must equal the config's sample_shape.
struct Sample {
  std::string uri;
  std::vector<std::pair<std::int64_t, std::int64_t>> aabb;

  friend bool operator==(const Sample& a, const Sample& b) {
    return a.uri == b.uri && a.aabb == b.aabb;
  }
  friend bool operator!=(const Sample& a, const Sample& b) { return !(a == b); }
};

/// A per-sample transform applied where the batch is made (fused into the GPU assemble
/// kernel; on CPU-made batches, by the Rust workers once the sample is assembled): what Python's
/// damacy.transforms.Augment computes, pushed with the sample (dev/ops.md, damacy::augment's
/// parameter row). `map`: the axis map, one byte per output axis counted from the last
/// (byte e-1 for axis -e): bits 0-3 the source axis counted from the last (0: itself), bit 4
/// set when the output runs backwards along it; 0 is the identity. With `intensity` (float
/// outputs), y = float(x) * scale + shift + the noise contract's normal times
/// sqrt(-noise_factor / 2) (noise_factor = float(-2 * noise_std**2); 0: no noise) from the
/// counter (noise_g odd, noise_b). A transform the pipeline cannot apply (a map that is not
/// a permutation of equal extents, intensity on integer outputs) fails the
/// sample's batch with InvalidArgument.
struct SampleTransform {
  std::uint64_t map = 0;
  float scale = 1.0f;
  float shift = -0.0f;
  std::uint32_t noise_g = 1;
  std::uint32_t noise_b = 0;
  float noise_factor = 0.0f;
  bool intensity = false;
};

/// A popped batch: `[samples_per_batch, *sample_shape]` and the samples it was made from, in
/// batch order (`samples[i]` is `tensor[i]`).
struct Batch {
  at::Tensor tensor;
  std::vector<Sample> samples;
};

class Pipeline;

/// A lazy source of samples, for generators and endless streams (Python's `push(iterable)`):
/// `next()` returns the next sample, or std::nullopt when the source is exhausted. `feed`
/// pulls samples into a pipeline until its lookahead window is full, holding on to the one
/// sample the full window refused, so no sample is lost or reordered; call it before each pop
/// (Pipeline::push(SampleGenerator&) does the same).
///
///   std::mt19937_64 rng(seed);
///   damacy::SampleGenerator gen([&]() -> std::optional<damacy::Sample> { return random_crop(rng); });
///   for (int i = 0; i < n; ++i) { pipe.push(gen); auto b = pipe.pop_batch(); ... }
class SampleGenerator {
 public:
  explicit SampleGenerator(std::function<std::optional<Sample>()> next) : next_(std::move(next)) {}

  /// Pushes into `pipe` until its window is full or the source is exhausted; returns how
  /// many samples were pushed. @throws what Pipeline::push and `next` throw.
  std::size_t feed(Pipeline& pipe);
  /// True once `next` returned std::nullopt and no refused sample is held.
  bool exhausted() const noexcept { return done_ && !held_; }

 private:
  std::function<std::optional<Sample>()> next_;
  std::optional<Sample> held_;  // pulled from next_, refused by a full window
  bool done_ = false;
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

  /// Offers one sample; false when the lookahead window is full (pop first). A bad box or
  /// array is not an error here: it fails the sample's batch at pop.
  /// @throws InvalidArgument (uri not UTF-8), ShutdownError (closed).
  bool push(const Sample& sample);
  /// Same, with the box as separate starts and stops.
  bool push(std::string_view uri, const std::vector<std::int64_t>& starts,
            const std::vector<std::int64_t>& stops);
  /// Same, with the sample's transform (SampleTransform), applied where its batch is made.
  bool push(std::string_view uri, const std::vector<std::int64_t>& starts,
            const std::vector<std::int64_t>& stops, const SampleTransform& transform);
  /// Pushes the samples of [first, last) in order until the window is full; returns the first
  /// sample not pushed (`last` when all were). Resume from there after a pop.
  template <class InputIt>
  InputIt push(InputIt first, InputIt last) {
    for (; first != last; ++first) {
      if (!push(static_cast<const Sample&>(*first))) break;
    }
    return first;
  }
  /// Same for a range of Samples (a std::vector, std::array, ...); returns how many were
  /// pushed: `samples[result]` is the first to push again after a pop.
  template <class Range, class = std::enable_if_t<std::is_convertible_v<
                             decltype(*std::begin(std::declval<const Range&>())), const Sample&>>>
  std::size_t push(const Range& samples) {
    std::size_t n = 0;
    for (const auto& s : samples) {
      if (!push(static_cast<const Sample&>(s))) break;
      ++n;
    }
    return n;
  }
  /// Pulls from `source` until the window is full or it is exhausted (SampleGenerator::feed);
  /// returns how many samples were pushed.
  std::size_t push(SampleGenerator& source) { return source.feed(*this); }

  /// The next batch in push order, `[samples_per_batch, *sample_shape]` of the config's dtype
  /// on the config's device; waits at most `timeout_s` (negative: the config's
  /// pop_timeout_s). On the CPU the tensor is a view of a pipeline buffer, which returns to
  /// the pipeline's pool when the last reference to the tensor's storage dies.
  /// @throws TryAgain (timed out, or nothing pushed), the batch's own error (the pipeline
  /// goes on with the next batch), ShutdownError.
  at::Tensor pop(double timeout_s = -1.0);
  /// pop() plus the batch's samples (`samples[i]` is `tensor[i]`). Same errors.
  Batch pop_batch(double timeout_s = -1.0);

  /// Samples pushed but not yet returned as part of a batch.
  std::uint64_t pending_samples() const;
  /// How many more samples push() takes before it returns false (the lookahead window's free
  /// places; only push fills them and only pop frees them, samples_per_batch at a time).
  std::uint64_t window_room() const;
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

inline std::size_t SampleGenerator::feed(Pipeline& pipe) {
  std::size_t pushed = 0;
  while (true) {
    if (!held_) {
      if (done_) return pushed;
      held_ = next_();
      if (!held_) {
        done_ = true;
        return pushed;
      }
    }
    if (!pipe.push(*held_)) return pushed;
    held_.reset();
    ++pushed;
  }
}

}  // namespace damacy
