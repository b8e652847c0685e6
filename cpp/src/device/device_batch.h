// Private: the device path of damacy::Pipeline (compiled only with DAMACY_CUDA).
//
// A device batch arrives from Rust as staged compressed bytes in a host slab plus three op
// lists (decode, unshuffle, copy/fill). `DeviceRunner::run` turns it into the output tensor
// on the caller's current stream of the pipeline's device: H2D of the staged bytes, nvCOMP
// batched decompression per codec, blosc unshuffle, one assemble launch. Nothing waits for
// the device except the decode-status read back (so a corrupt chunk fails its own batch).
// The Rust batch (and so its slab) is kept until the device finished reading the slab.
#pragma once

#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include "bridge.h"

namespace damacy::detail {

/// GPU capability of this build, as JSON: {"cuda_built", "nvcomp_available", "nvcomp_path",
/// "nvcomp_version", "why"}; loads nvCOMP once, searching the `:`-separated folders given.
std::string gpu_info_json(const std::string& search_path);

/// "" when nvCOMP is usable, else why (with the fix).
std::string nvcomp_unavailable_reason();

class DeviceRunner {
 public:
  explicit DeviceRunner(const at::Device& device);
  ~DeviceRunner();
  DeviceRunner(const DeviceRunner&) = delete;
  DeviceRunner& operator=(const DeviceRunner&) = delete;

  /// The batch's output tensor `[samples_per_batch, *sample_shape]` on the device.
  /// @throws DecodeError for chunks nvCOMP rejected, CudaError for CUDA failures.
  at::Tensor run(rust::Box<ffi::Batch> batch);

  /// Waits for the device to finish with every slab, drops the held batches and unpins the
  /// slabs. Idempotent.
  void close() noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace damacy::detail
