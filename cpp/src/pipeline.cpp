// damacy::Pipeline: the Rust pipeline behind the C++ libtorch API.
//
// Ownership of a popped batch: the Rust `Batch` owns the output bytes. On the CPU the tensor
// is a view of those bytes whose storage context is the released `rust::Box<Batch>`; the
// context deleter re-boxes and drops it, which hands the buffer back to the pipeline's pool.
#include "damacy/pipeline.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include "bridge.h"
#if DAMACY_WITH_CUDA
#include "device/device_batch.h"
#endif

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

namespace {
// Device batches kept launched (the one returned next included): DAMACY_DEVICE_AHEAD,
// default 2, 1..8. More overlap costs one batch of device memory each.
size_t device_ahead() {
  const char* v = std::getenv("DAMACY_DEVICE_AHEAD");
  const long n = v ? std::strtol(v, nullptr, 10) : 2;
  return static_cast<size_t>(std::clamp<long>(n, 1, 8));
}
}  // namespace

struct Pipeline::Impl {
  Config config;
  at::Device device;
  rust::Box<ffi::Pipeline> rust;
#if DAMACY_WITH_CUDA
  std::unique_ptr<detail::DeviceRunner> runner = nullptr;  // device path (decode on the GPU)
  size_t ahead = device_ahead();
#endif

  // The next batch as a tensor, with its samples JSON when asked.
  at::Tensor next(double timeout_s, std::string* samples) {
#if DAMACY_WITH_CUDA
    if (runner) return next_device(timeout_s, samples);
#endif
    auto batch = detail::call([&] { return rust->pop(timeout_s); });
    if (samples) *samples = std::string(batch->samples_json());
    return to_tensor(std::move(batch), device);
  }

#if DAMACY_WITH_CUDA
  // Device path: keep one batch launched ahead, so its decode overlaps the caller's work on
  // the batch just returned. Batch errors keep their place in the queue.
  at::Tensor next_device(double timeout_s, std::string* samples) {
    if (runner->queued() == 0) {
      auto batch = detail::call([&] { return rust->pop(timeout_s); });  // TryAgain etc. pass
      runner->enqueue(std::move(batch));
    }
    while (runner->queued() < ahead) {
      try {
        runner->enqueue(detail::call([&] { return rust->pop(0.0); }));
      } catch (const TryAgain&) {
        break;  // not staged yet: a later pop waits for it
      } catch (const PoolStarved&) {
        break;
      } catch (const ShutdownError&) {
        break;
      } catch (...) {
        runner->enqueue_error(std::current_exception());
      }
    }
    auto taken = runner->take();
    if (samples) *samples = std::move(taken.samples);
    return taken.tensor;
  }
#endif
  void close() {
#if DAMACY_WITH_CUDA
    if (runner) runner->close();  // unpins slabs before Rust may free them
#endif
    rust->close();
  }
};

namespace {

// Where chunks of a CUDA pipeline are decoded: "gpu" needs this build's CUDA path and
// nvCOMP (else InvalidArgument/CudaError with the fix); "auto" falls back to CPU decode with
// one log line; the config handed to Rust says which.
Config resolve_decode(const Config& config, const at::Device& device) {
  const std::string decode = config.decode();
  if (!device.is_cuda() || decode == "cpu") return config;
  std::string why;
#if DAMACY_WITH_CUDA
  why = detail::nvcomp_unavailable_reason();
#else
  why = "this damacy build has no CUDA support (rebuild with a CUDA compiler, DAMACY_CUDA=ON)";
#endif
  if (why.empty()) return config;
  if (decode == "gpu") throw CudaError("decode=\"gpu\": " + why);
  static bool logged = false;
  if (!logged) {
    logged = true;
    std::fprintf(stderr, "damacy: decoding on the CPU (decode=\"auto\"): %s\n", why.c_str());
  }
  return config.with_decode("cpu");
}

}  // namespace

Pipeline::Pipeline(const Config& requested) {
  at::Device device = parse_device(requested.device());
  const Config config = resolve_decode(requested, device);
  auto rust = detail::call([&] { return ffi::pipeline_new(config.raw()); });
  impl_ = std::make_unique<Impl>(Impl{config, device, std::move(rust)});
#if DAMACY_WITH_CUDA
  if (device.is_cuda() && config.decode() != "cpu") impl_->runner = std::make_unique<detail::DeviceRunner>(device);
#endif
}

Pipeline::Pipeline(std::string_view config_json) : Pipeline(Config::from_json(config_json)) {}

Pipeline::~Pipeline() {
  if (impl_) impl_->close();
}

Pipeline::Pipeline(Pipeline&&) noexcept = default;

Pipeline& Pipeline::operator=(Pipeline&& other) noexcept {
  if (this != &other) {
    if (impl_) impl_->close();
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
  return impl_->next(timeout_s, nullptr);
}

BatchWithSamples Pipeline::pop_with_samples(double timeout_s) {
  if (!impl_) moved_from();
  std::string samples;
  at::Tensor tensor = impl_->next(timeout_s, &samples);
  return {std::move(tensor), std::move(samples)};
}

std::uint64_t Pipeline::pending_samples() const {
  if (!impl_) moved_from();
  std::uint64_t n = impl_->rust->pending_samples();
#if DAMACY_WITH_CUDA
  // Batches launched ahead on the device are popped from Rust but not yet returned.
  if (impl_->runner) n += impl_->runner->queued() * impl_->config.samples_per_batch();
#endif
  return n;
}

std::string Pipeline::stats() const {
  if (!impl_) moved_from();
  std::string json(impl_->rust->stats_json());
#if DAMACY_WITH_CUDA
  // "batches" counts batches returned to the caller: those launched ahead on the device
  // were popped from Rust but not yet returned.
  if (impl_->runner && impl_->runner->queued()) {
    const std::string key = "\"batches\":";
    const size_t at = json.find(key);
    if (at != std::string::npos) {
      const size_t from = at + key.size();
      const size_t to = json.find_first_not_of("0123456789", from);
      const unsigned long long n = std::stoull(json.substr(from, to - from));
      const unsigned long long ahead = impl_->runner->queued();
      json.replace(from, to - from, std::to_string(n >= ahead ? n - ahead : 0));
    }
  }
#endif
  return json;
}

void Pipeline::close() {
  if (impl_) impl_->close();
}

const Config& Pipeline::config() const {
  if (!impl_) moved_from();
  return impl_->config;
}

}  // namespace damacy
