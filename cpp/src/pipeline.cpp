// damacy::Pipeline: the Rust pipeline behind the C++ libtorch API.
//
// Ownership of a popped batch: the Rust `Batch` owns the output bytes. On the CPU the tensor
// is a view of those bytes whose storage context is the released `rust::Box<Batch>`; the
// context deleter re-boxes and drops it, which hands the buffer back to the pipeline's pool.
#include "damacy/pipeline.h"

#include <cstdint>
#include <cstring>
#include <string>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include "bridge.h"

namespace damacy {
namespace {

// Storage context deleter of a CPU batch tensor (runs when the storage dies).
void drop_batch(void* batch) noexcept {
  // SAFETY: `batch` came from rust::Box<ffi::Batch>::into_raw in to_tensor, exactly once.
  (void)rust::Box<ffi::Batch>::from_raw(static_cast<ffi::Batch*>(batch));
}

// Config dtype names (rust/src/pipeline/config.rs OutDtype::name) -> torch dtypes.
at::ScalarType scalar_type(std::string_view dtype) {
  if (dtype == "f32") return at::kFloat;
  if (dtype == "bf16") return at::kBFloat16;
  if (dtype == "u8") return at::kByte;
  if (dtype == "i32") return at::kInt;
  if (dtype == "i64") return at::kLong;
  std::string message = "batch dtype: expected \"f32\", \"bf16\", \"u8\", \"i32\" or \"i64\", found \"";
  message += dtype;
  message += '"';
  throw DtypeMismatch(message);
}

at::Device parse_device(const std::string& device) {
  try {
    return at::Device(device);
  } catch (const c10::Error&) {
    throw InvalidArgument("config field `device`: cannot parse \"" + device + "\"");
  }
}

// The batch as a tensor on `device`; consumes the batch.
at::Tensor to_tensor(rust::Box<ffi::Batch> batch, const at::Device& device) {
  const rust::Slice<std::uint8_t> bytes = batch->bytes();
  const rust::Vec<std::int64_t> shape_rs = batch->shape();
  const std::vector<std::int64_t> shape(shape_rs.begin(), shape_rs.end());
  const at::ScalarType dtype = scalar_type(std::string(batch->dtype()));
  const auto options = at::TensorOptions().dtype(dtype);

  std::int64_t numel = 1;
  for (std::int64_t d : shape) numel *= d;
  const std::size_t item = c10::elementSize(dtype);
  if (static_cast<std::size_t>(numel) * item != bytes.size()) {
    throw_error(Status::InvalidArgument,
                "internal error (please report): batch holds " + std::to_string(bytes.size()) +
                    " bytes, its shape needs " + std::to_string(numel * item));
  }

  at::Tensor cpu;
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % item != 0) {
    // Torch kernels assume element alignment; Rust's buffers should always give it, and a
    // copy keeps a misaligned buffer from ever reaching them.
    cpu = at::empty(shape, options);
    std::memcpy(cpu.data_ptr(), bytes.data(), bytes.size());
  } else {
    void* data = bytes.data();
    // The TensorMaker owns the context from here on (also if make_tensor throws).
    cpu = at::for_blob(data, shape).context(batch.into_raw(), &drop_batch).options(options).make_tensor();
  }
  if (device.is_cpu()) return cpu;
  // Placeholder until the device path (cpp/src/cuda, nvCOMP) exists: CPU decode, then a
  // synchronous copy on the current stream; the CPU buffer goes back to the pool right after.
  try {
    return cpu.to(device);
  } catch (const c10::Error& e) {
    throw CudaError(std::string("copying the batch to ") + device.str() + ": " + e.what_without_backtrace());
  }
}

}  // namespace

struct Pipeline::Impl {
  Config config;
  at::Device device;
  rust::Box<ffi::Pipeline> rust;
};

Pipeline::Pipeline(const Config& config) {
  at::Device device = parse_device(config.device());
  auto rust = detail::call([&] { return ffi::pipeline_new(config.raw()); });
  impl_ = std::make_unique<Impl>(Impl{config, device, std::move(rust)});
}

Pipeline::Pipeline(std::string_view config_json) : Pipeline(Config::from_json(config_json)) {}

Pipeline::~Pipeline() {
  if (impl_) impl_->rust->close();
}

Pipeline::Pipeline(Pipeline&&) noexcept = default;

Pipeline& Pipeline::operator=(Pipeline&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->rust->close();
    impl_ = std::move(other.impl_);
  }
  return *this;
}

namespace {
[[noreturn]] void moved_from() { throw ShutdownError("pipeline was moved from"); }
}  // namespace

bool Pipeline::push(const Sample& sample) {
  std::vector<std::int64_t> starts, stops;
  starts.reserve(sample.aabb.size());
  stops.reserve(sample.aabb.size());
  for (const auto& [start, stop] : sample.aabb) {
    starts.push_back(start);
    stops.push_back(stop);
  }
  return push(sample.uri, starts, stops);
}

bool Pipeline::push(std::string_view uri, const std::vector<std::int64_t>& starts,
                    const std::vector<std::int64_t>& stops) {
  if (!impl_) moved_from();
  const rust::Str uri_rs = detail::str(uri, "sample uri");
  return detail::call([&] {
    return impl_->rust->push(uri_rs, rust::Slice<const std::int64_t>(starts.data(), starts.size()),
                             rust::Slice<const std::int64_t>(stops.data(), stops.size()));
  });
}

at::Tensor Pipeline::pop(double timeout_s) {
  if (!impl_) moved_from();
  auto batch = detail::call([&] { return impl_->rust->pop(timeout_s); });
  return to_tensor(std::move(batch), impl_->device);
}

BatchWithSamples Pipeline::pop_with_samples(double timeout_s) {
  if (!impl_) moved_from();
  auto batch = detail::call([&] { return impl_->rust->pop(timeout_s); });
  std::string samples(batch->samples_json());
  return {to_tensor(std::move(batch), impl_->device), std::move(samples)};
}

std::uint64_t Pipeline::pending_samples() const {
  if (!impl_) moved_from();
  return impl_->rust->pending_samples();
}

std::string Pipeline::stats() const {
  if (!impl_) moved_from();
  return std::string(impl_->rust->stats_json());
}

void Pipeline::close() {
  if (impl_) impl_->rust->close();
}

const Config& Pipeline::config() const {
  if (!impl_) moved_from();
  return impl_->config;
}

}  // namespace damacy
