// damacy::Config: a validated pipeline configuration (no torch).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace damacy {

namespace ffi {
struct Config;  // the bridge's opaque Rust config (rust/src/ffi/api.rs); complete only there
}  // namespace ffi

/// A pipeline configuration, always valid: every way to make one goes through Rust's single
/// validation pass (serde, `rust/src/pipeline/config.rs`). Cheap to copy (shared, immutable).
/// Fields and their meanings are those of Rust's `pipeline::Config` and Python's
/// `damacy.Config`; this class only reads them.
class Config {
 public:
  /// The defaults (`damacy.Config()` in Python).
  static Config defaults();
  /// A JSON object of config fields over the defaults, e.g.
  /// `{"samples_per_batch": 8, "sample_shape": [64, 128, 128]}`.
  /// @throws InvalidArgument naming the field for unknown fields, wrong types or values.
  static Config from_json(std::string_view json);

  /// Every field as a JSON object (accepted by from_json).
  std::string to_json() const;

  std::uint32_t samples_per_batch() const noexcept;
  std::vector<std::uint64_t> sample_shape() const;
  /// "f32", "bf16", "u8", "i32" or "i64" (torch float, bfloat16, uint8, int32, int64).
  std::string dtype() const;
  /// "cpu", "cuda" or "cuda:N".
  std::string device() const;
  /// "auto", "gpu" or "cpu": where chunks are decoded.
  std::string decode() const;
  /// Whether batches decode on the device (Rust's one rule: device is CUDA and decode is
  /// "gpu", or "auto" with a floating-point output dtype).
  bool decodes_on_device() const noexcept;
  /// The config once the device path's availability is known: `unavailable` empty means it
  /// can run; otherwise it says why not, and "auto" falls back to CPU decode while "gpu"
  /// throws CudaError with that reason.
  Config resolved(std::string_view unavailable) const;
  /// The default pop timeout in seconds.
  double pop_timeout_s() const noexcept;
  /// Device batches kept launched ahead of the one returned (the `device_ahead` field).
  std::uint32_t device_ahead() const noexcept;

  /// The bridge handle (for the library's own use; the type is complete only there).
  const ffi::Config& raw() const noexcept { return *cfg_; }

 private:
  explicit Config(std::shared_ptr<const ffi::Config> cfg) : cfg_(std::move(cfg)) {}
  std::shared_ptr<const ffi::Config> cfg_;
};

}  // namespace damacy
