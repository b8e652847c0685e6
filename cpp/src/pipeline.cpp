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
#include "log_sink.h"
#include "torch_errors.h"
#if DAMACY_WITH_CUDA
#include "device/device_batch.h"
#endif

namespace damacy {
namespace {

// Storage context deleter of a CPU batch tensor (runs when the storage dies).
void drop_batch(void* batch) noexcept {
  // SAFETY: `batch` came from rust::Box<ffi::Batch>::into_raw in cpu_tensor, exactly once.
  (void)rust::Box<ffi::Batch>::from_raw(static_cast<ffi::Batch*>(batch));
}

// The bridge's output dtype -> the torch dtype.
at::ScalarType scalar_type(ffi::OutDtype dtype) {
  switch (dtype) {
    case ffi::OutDtype::F32: return at::kFloat;
    case ffi::OutDtype::Bf16: return at::kBFloat16;
    case ffi::OutDtype::U8: return at::kByte;
    case ffi::OutDtype::I32: return at::kInt;
    case ffi::OutDtype::I64: return at::kLong;
  }
  throw InternalError("batch has an unknown output dtype code " + std::to_string(static_cast<int>(dtype)));
}

// The bridge's sample records -> the C++ API's samples.
std::vector<Sample> to_samples(const rust::Vec<ffi::SampleRecord>& records) {
  std::vector<Sample> out;
  out.reserve(records.size());
  for (const auto& r : records) {
    Sample s{std::string(r.uri), {}};
    s.aabb.reserve(r.starts.size());
    for (size_t d = 0; d < r.starts.size() && d < r.stops.size(); ++d) s.aabb.emplace_back(r.starts[d], r.stops[d]);
    out.push_back(std::move(s));
  }
  return out;
}

at::Device parse_device(const std::string& device) {
  try {
    return at::Device(device);
  } catch (const c10::Error&) {
    throw InvalidArgument("config field `device`: cannot parse \"" + device + "\"");
  }
}

// The batch's bytes as a CPU tensor that owns the batch (its pool buffer goes back to Rust
// when the last reference dies); consumes the batch.
at::Tensor cpu_tensor(rust::Box<ffi::Batch> batch) {
  const rust::Slice<std::uint8_t> bytes = batch->bytes();
  const rust::Vec<std::int64_t> shape_rs = batch->shape();
  const std::vector<std::int64_t> shape(shape_rs.begin(), shape_rs.end());
  const at::ScalarType dtype = scalar_type(batch->out_dtype());
  const auto options = at::TensorOptions().dtype(dtype);

  std::int64_t numel = 1;
  for (std::int64_t d : shape) numel *= d;
  const std::size_t item = c10::elementSize(dtype);
  if (static_cast<std::size_t>(numel) * item != bytes.size()) {
    throw InternalError("batch holds " + std::to_string(bytes.size()) + " bytes, its shape needs " +
                        std::to_string(numel * item));
  }

  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % item != 0) {
    // Torch kernels assume element alignment; Rust's buffers should always give it, and a
    // copy keeps a misaligned buffer from ever reaching them.
    at::Tensor cpu = at::empty(shape, options);
    std::memcpy(cpu.data_ptr(), bytes.data(), bytes.size());
    return cpu;
  }
  void* data = bytes.data();
  // The TensorMaker owns the context from here on (also if make_tensor throws).
  return at::for_blob(data, shape).context(batch.into_raw(), &drop_batch).options(options).make_tensor();
}

}  // namespace

struct Pipeline::Impl {
  Config config;
  at::Device device;
  rust::Box<ffi::Pipeline> rust;
#if DAMACY_WITH_CUDA
  std::unique_ptr<detail::DeviceRunner> runner = nullptr;  // device path (decode on the GPU)
  std::unique_ptr<detail::HostUploader> uploader = nullptr;  // CPU decode for a CUDA device
#endif

  // The next batch as a tensor, with its samples when asked. Rust counts it delivered only
  // once it is on its way to the caller (a device batch launched ahead is not).
  at::Tensor next(double timeout_s, std::vector<Sample>* samples) {
#if DAMACY_WITH_CUDA
    if (runner) return next_device(timeout_s, samples);
    if (uploader) uploader->reap();  // buffers of finished copies back to Rust first
#endif
    auto batch = detail::call([&] { return rust->pop_batch(timeout_s); });
    if (samples) *samples = to_samples(batch->sample_records());
    // A CPU-made batch arrives with its samples' transforms (Augment fused) applied by Rust.
    at::Tensor t = cpu_tensor(std::move(batch));
    if (!device.is_cpu()) t = to_device(std::move(t));
    rust->delivered(1, false);
    return t;
  }

  // A CPU-made batch on the CUDA device: async from its pinned pool buffer (HostUploader).
  at::Tensor to_device(at::Tensor cpu) {
#if DAMACY_WITH_CUDA
    // Started at the first batch, not with the pipeline: a CUDA build on a machine without
    // a driver still constructs cuda pipelines (they fail at pop, like any device work).
    if (device.is_cuda() && !uploader) {
      uploader = detail::on_device("starting the batch uploader on " + device.str(),
                                   [&] { return std::make_unique<detail::HostUploader>(device); });
    }
    return detail::on_device("copying the batch to " + device.str(), [&] {
      return uploader ? uploader->upload(std::move(cpu)) : cpu.to(device);
    });
#else
    return detail::on_device("copying the batch to " + device.str(), [&] { return cpu.to(device); });
#endif
  }

#if DAMACY_WITH_CUDA
  // Device path: keep one batch launched ahead, so its decode overlaps the caller's work on
  // the batch just returned. Batch errors keep their place in the queue.
  at::Tensor next_device(double timeout_s, std::vector<Sample>* samples) {
    if (runner->queued() == 0) {
      auto batch = detail::call([&] { return rust->pop_batch(timeout_s); });  // TryAgain etc. pass
      runner->enqueue(std::move(batch));
    }
    while (runner->queued() < config.device_ahead()) {
      try {
        runner->enqueue(detail::call([&] { return rust->pop_batch(0.0); }));
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
    const bool from_batch = runner->next_is_batch();
    detail::DeviceRunner::Taken taken;
    try {
      taken = detail::on_device("finishing a batch on " + device.str(), [&] { return runner->take(); });
    } catch (...) {
      // A batch Rust handed over reaches the caller as this error; a failed pop was
      // never Rust's to count.
      if (from_batch) rust->delivered(1, true);
      throw;
    }
    rust->delivered(1, false);
    if (samples) *samples = to_samples(taken.samples);
    return std::move(taken.tensor);
  }
#endif
  void close() {
#if DAMACY_WITH_CUDA
    if (runner) runner->close();  // unpins slabs before Rust may free them
    if (uploader) uploader->close();  // the same for pinned output buffers
#endif
    rust->close();
  }
};

namespace {

// Where chunks of a CUDA pipeline are decoded: Rust's Config::resolved decides, told whether
// this build can decode on the device ("" = yes, else why not): "gpu" fails with the reason,
// "auto" falls back to CPU decode with one log line.
Config resolve_decode(const Config& config, const at::Device& device) {
  if (!device.is_cuda() || !config.decodes_on_device()) return config;
  std::string why;
#if DAMACY_WITH_CUDA
  why = detail::nvcomp_unavailable_reason();
#else
  why = "this damacy build has no CUDA support (rebuild with a CUDA compiler, DAMACY_CUDA=ON)";
#endif
  Config resolved = config.resolved(why);
  // One record per pipeline that falls back (Python: a warning on the "damacy" logger).
  if (!why.empty() && !resolved.decodes_on_device()) {
    detail::log(LogLevel::Warning, "decoding on the CPU (decode=\"auto\"): " + why);
  }
  return resolved;
}

}  // namespace

Pipeline::Pipeline(const Config& requested) {
  at::Device device = parse_device(requested.device());
  const Config config = resolve_decode(requested, device);
  auto rust = detail::call([&] { return ffi::pipeline_new(config.raw()); });
  impl_ = std::make_unique<Impl>(Impl{config, device, std::move(rust)});
#if DAMACY_WITH_CUDA
  if (device.is_cuda() && config.decodes_on_device()) {
    impl_->runner = detail::on_device("starting the device runner on " + device.str(),
                                      [&] { return std::make_unique<detail::DeviceRunner>(device); });
  }
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
    return impl_->rust->push_sample(uri_rs, rust::Slice<const std::int64_t>(starts.data(), starts.size()),
                             rust::Slice<const std::int64_t>(stops.data(), stops.size()));
  });
}

bool Pipeline::push(std::string_view uri, const std::vector<std::int64_t>& starts,
                    const std::vector<std::int64_t>& stops, const SampleTransform& transform) {
  if (!impl_) moved_from();
  const rust::Str uri_rs = detail::str(uri, "sample uri");
  ffi::SampleTransform t{};
  t.map = transform.map;
  t.scale = transform.scale;
  t.shift = transform.shift;
  t.noise_g = transform.noise_g;
  t.noise_b = transform.noise_b;
  t.noise_factor = transform.noise_factor;
  t.intensity = transform.intensity;
  return detail::call([&] {
    return impl_->rust->push_sample_transformed(uri_rs, rust::Slice<const std::int64_t>(starts.data(), starts.size()),
                                                rust::Slice<const std::int64_t>(stops.data(), stops.size()), t);
  });
}

at::Tensor Pipeline::pop(double timeout_s) {
  if (!impl_) moved_from();
  return impl_->next(timeout_s, nullptr);
}

Batch Pipeline::pop_batch(double timeout_s) {
  if (!impl_) moved_from();
  Batch b;
  b.tensor = impl_->next(timeout_s, &b.samples);
  return b;
}

std::uint64_t Pipeline::pending_samples() const {
  if (!impl_) moved_from();
  return impl_->rust->pending_samples();
}

std::uint64_t Pipeline::window_room() const {
  if (!impl_) moved_from();
  return impl_->rust->window_room();
}

std::string Pipeline::stats() const {
  if (!impl_) moved_from();
  return std::string(impl_->rust->stats_json());
}

void Pipeline::close() {
  if (impl_) impl_->close();
}

const Config& Pipeline::config() const {
  if (!impl_) moved_from();
  return impl_->config;
}

}  // namespace damacy
