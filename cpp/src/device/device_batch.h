// Private: the device path of damacy::Pipeline (compiled only with DAMACY_CUDA).
//
// A device batch arrives from Rust as staged compressed bytes in a host slab plus three op
// lists (decode, unshuffle, copy/fill). `DeviceRunner::run` turns it into the output tensor
// on the pipeline's device: H2D of the staged bytes, nvCOMP batched decompression per
// codec, the zstd content checksums (XXH64, frames with the flag), blosc unshuffle, one
// assemble launch, all on the runner's own stream, so the next
// batch decodes while the caller computes on the current one. `take` joins the caller's
// current stream to that work through an event (never the legacy default stream) and reads
// the decode status first, so a corrupt chunk fails its own batch. The Rust batch (and so
// its staging slab) is kept until the device finished reading the slab.
#pragma once

#include <exception>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "bridge.h"

namespace damacy::detail {

/// GPU capability of this build, as JSON: {"cuda_built", "nvcomp_available", "nvcomp_path",
/// "nvcomp_version", "nvcomp_major", "why"}; loads nvCOMP once, searching the `:`-separated folders given.
std::string gpu_info_json(const std::string& search_path);

/// "" when nvCOMP is usable, else why (with the fix).
std::string nvcomp_unavailable_reason();

/// CPU-made batches for a CUDA device (decode on the CPU): each batch's host buffer (a Rust
/// pool buffer, reused batch after batch) is pinned once with cudaHostRegister and copied by
/// one async H2D on the uploader's own stream, which the caller's current stream then waits
/// for (an event); the batch's CPU tensor (so its pool buffer) is kept until the copy is
/// done. The host thread no longer waits for a pageable copy (staged by the driver, behind
/// the caller's queued work). A buffer that cannot be pinned is copied as before
/// (synchronously, on the current stream).
class HostUploader {
 public:
  explicit HostUploader(const at::Device& device);
  ~HostUploader();
  HostUploader(const HostUploader&) = delete;
  HostUploader& operator=(const HostUploader&) = delete;

  /// Releases the CPU tensors whose copies are done (their buffers go back to Rust); call
  /// before waiting for the next batch, so the pool is not short of them.
  void reap() noexcept;
  /// `cpu` (a batch owning its pool buffer) on the device, usable on the caller's current
  /// stream.
  at::Tensor upload(at::Tensor cpu);
  /// Waits for every copy, drops the CPU tensors and unpins the buffers. Idempotent.
  void close() noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

class DeviceRunner {
 public:
  explicit DeviceRunner(const at::Device& device);
  ~DeviceRunner();
  DeviceRunner(const DeviceRunner&) = delete;
  DeviceRunner& operator=(const DeviceRunner&) = delete;

  /// Launches a batch's device work on the runner's own stream and queues it; a failure
  /// is queued too, and thrown by the `take` that reaches it.
  void enqueue(rust::Box<ffi::Batch> batch) noexcept;
  /// Queues an error in batch order: a pop that failed (`from_batch` false), or a batch
  /// Rust handed over that failed to launch (true).
  void enqueue_error(std::exception_ptr error, bool from_batch = false) noexcept;
  /// Whether the oldest queued entry came from a batch Rust handed over (for its count of
  /// batches popped but not yet delivered).
  bool next_is_batch() const noexcept;
  /// Batches queued and not yet taken.
  size_t queued() const noexcept;

  struct Taken {
    at::Tensor tensor;   // [samples_per_batch, *sample_shape] on the device
    rust::Vec<ffi::SampleRecord> samples;  // the batch's samples, in batch order
  };
  /// The oldest queued batch: waits for its decode status, throws its error (DecodeError
  /// naming the chunk, CudaError, ...), makes the caller's current stream wait for its
  /// work and records the tensor's use on that stream. Needs queued() > 0.
  Taken take();

  /// Waits for the device to finish with every slab, drops the held batches and unpins the
  /// slabs. Idempotent.
  void close() noexcept;

 private:
  void launch(rust::Box<ffi::Batch> batch);
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace damacy::detail
