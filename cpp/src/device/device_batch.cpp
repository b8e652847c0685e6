// The device path of a batch: see device_batch.h.
#include "device/device_batch.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <optional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include "damacy/detail/gpu_kernels.h"
#include "damacy/detail/gpu_plan.h"
#include "damacy/errors.h"
#include "nvcomp/nvcomp_loader.h"
#include "torch_errors.h"

namespace damacy::detail {
namespace {

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) {
    throw CudaError(std::string(what) + ": " + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")");
  }
}

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

at::Tensor device_bytes(uint64_t n, const at::Device& device) {
  return at::empty({static_cast<int64_t>(std::max<uint64_t>(n, 1))},
                   at::TensorOptions().dtype(at::kByte).device(device));
}

template <class T>
at::Tensor upload(const T* data, size_t n, const at::Device& device, cudaStream_t stream) {
  at::Tensor d = device_bytes(n * sizeof(T), device);
  if (n) check_cuda(cudaMemcpyAsync(d.data_ptr(), data, n * sizeof(T), cudaMemcpyHostToDevice, stream), "upload ops");
  return d;
}

// One batch between launch and take.
struct Queued {
  std::exception_ptr error;  // set: this batch failed before or while launching
  bool from_batch = true;    // Rust handed over a batch here (false: its pop failed)
  std::optional<rust::Box<ffi::Batch>> batch;  // owns the staging slab until the work is done
  at::Tensor out;
  rust::Vec<ffi::SampleRecord> samples;
  cudaEvent_t done = nullptr;  // all of the batch's work on the runner's stream
  at::Tensor h_result;         // pinned decode-status words {failed, first op} per nvCOMP call
  struct Check {
    std::vector<uint32_t> op_index;  // decode-op index of each chunk of the call
    std::string codec;
  };
  std::vector<Check> checks;
  bool checksums = false;  // words 2 * checks.size() + {0, 1} of h_result: zstd checksum check
  // Pinned host buffers the device copies from asynchronously (nvCOMP argument arrays):
  // torch's host allocator would hand them out again at once, since our raw copies record
  // no event with it, so they live until the batch is taken.
  std::vector<at::Tensor> host_keep;
  // Device chunk store: this batch's sequence number, whether it keeps chunks in the pool,
  // and the batches whose kept chunks it fetches.
  uint64_t seq = 0;
  bool keeps = false;
  std::vector<uint64_t> producers;
};

// Most failed keeper batches remembered (far more than batches launched ahead).
constexpr size_t kMaxFailedKeepers = 4096;

}  // namespace

std::string gpu_info_json(const std::string& search_path) {
  const bool ok = nvcomp::load_pathlist(search_path);
  std::string out = "{\"cuda_built\": true, \"nvcomp_available\": ";
  out += ok ? "true" : "false";
  out += ", \"nvcomp_path\": \"" + json_escape(nvcomp::library_path()) + "\"";
  out += ", \"nvcomp_version\": " + std::to_string(nvcomp::library_version());
  out += ", \"nvcomp_major\": " + std::to_string(nvcomp::library_major());
  out += ", \"why\": \"" + json_escape(nvcomp::why_unavailable()) + "\"}";
  return out;
}

std::string nvcomp_unavailable_reason() {
  return nvcomp::available() ? std::string() : nvcomp::why_unavailable();
}

struct DeviceRunner::State {
  at::Device device;
  // The runner's own streams, used in turn by consecutive batches so that one batch's
  // decode can overlap the previous batch's tail; joined to the caller's by events.
  std::vector<c10::cuda::CUDAStream> streams;
  size_t launched = 0;
  std::deque<Queued> queue;
  // Staging slabs pinned with cudaHostRegister: start -> registered bytes. A slab is pinned
  // over the part batches use (grown, never shrunk), not its whole reserved size.
  std::map<void*, size_t> pinned;
  bool closed = false;
  // The device chunk store's pool (Rust plans its slots: rust/src/cache/device.rs),
  // allocated at the first batch with store copies and kept until close. `store_event`
  // follows the last batch's store copies: each batch's copies wait for it, so the copies of
  // consecutive batches (on alternating streams) run in batch order, which is what makes a
  // slot's reuse safe (the module doc of cache/device.rs).
  at::Tensor store;
  cudaEvent_t store_event = nullptr;
  // Batches with chunks to keep whose device work failed: a batch fetching their chunks
  // fails at take (every producer is an earlier batch, taken first).
  std::set<uint64_t> failed_keepers;

  void keeper_failed(uint64_t seq) {
    failed_keepers.insert(seq);
    while (failed_keepers.size() > kMaxFailedKeepers) failed_keepers.erase(failed_keepers.begin());
  }

  explicit State(const at::Device& d)
      : device(d) {
    for (int i = 0; i < 2; ++i) streams.push_back(c10::cuda::getStreamFromPool(/*isHighPriority=*/false, d.index()));
  }

  void pin(uint8_t* slab, size_t used, size_t capacity) {
    if (!used) return;
    auto it = pinned.find(slab);
    if (it != pinned.end() && it->second >= used) return;
    if (it != pinned.end()) {
      // The slab is idle (its previous batch was taken), so it may be re-pinned larger.
      cudaHostUnregister(slab);
      pinned.erase(it);
    }
    const size_t want = std::min(capacity, std::max<size_t>(used + used / 4, size_t(16) << 20));
    check_cuda(cudaHostRegister(slab, want, cudaHostRegisterDefault), "pinning a staging slab");
    pinned[slab] = want;
  }
};

struct HostUploader::State {
  at::Device device;
  c10::cuda::CUDAStream stream;
  std::map<void*, size_t> pinned;  // buffer start -> registered bytes
  std::set<void*> refused;         // buffers cudaHostRegister refused: copied synchronously
  std::deque<std::pair<cudaEvent_t, at::Tensor>> inflight;  // copy done -> CPU tensor to drop
  bool closed = false;

  explicit State(const at::Device& d) : device(d), stream(c10::cuda::getStreamFromPool(false, d.index())) {}

  // Whether [p, p + n) lies in a pinned buffer (pinning it now when it is new).
  bool pin(void* p, size_t n) {
    auto it = pinned.find(p);
    if (it != pinned.end() && it->second >= n) return true;
    if (refused.count(p)) return false;
    if (it != pinned.end()) {  // not in flight (reaped first): may be re-pinned larger
      drain();
      cudaHostUnregister(p);
      pinned.erase(it);
    }
    if (cudaHostRegister(p, n, cudaHostRegisterDefault) != cudaSuccess) {
      (void)cudaGetLastError();  // clear it: the copy goes the synchronous way
      refused.insert(p);
      return false;
    }
    pinned[p] = n;
    return true;
  }

  void drain() noexcept {
    for (auto& [ev, t] : inflight) {
      cudaEventSynchronize(ev);
      cudaEventDestroy(ev);
    }
    inflight.clear();
  }
};

HostUploader::HostUploader(const at::Device& device) : state_(std::make_unique<State>(device)) {}

HostUploader::~HostUploader() { close(); }

void HostUploader::reap() noexcept {
  auto& q = state_->inflight;
  while (!q.empty() && cudaEventQuery(q.front().first) == cudaSuccess) {
    cudaEventDestroy(q.front().first);
    q.pop_front();
  }
  (void)cudaGetLastError();  // cudaErrorNotReady is not an error here
}

at::Tensor HostUploader::upload(at::Tensor cpu) {
  State& st = *state_;
  if (st.closed) throw ShutdownError("host uploader closed");
  c10::cuda::CUDAGuard guard(st.device);
  const size_t n = cpu.nbytes();
  const c10::cuda::CUDAStream user = c10::cuda::getCurrentCUDAStream(st.device.index());
  if (n == 0 || !st.pin(cpu.data_ptr(), n)) return cpu.to(st.device);
  at::Tensor out = [&] {
    c10::cuda::CUDAStreamGuard on_copy(st.stream);  // allocated for the copy stream
    return at::empty(cpu.sizes(), cpu.options().device(st.device));
  }();
  check_cuda(cudaMemcpyAsync(out.data_ptr(), cpu.data_ptr(), n, cudaMemcpyHostToDevice, st.stream.stream()), "batch H2D");
  cudaEvent_t done = nullptr;
  check_cuda(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "event");
  const cudaError_t rec = cudaEventRecord(done, st.stream.stream());
  const cudaError_t wait = rec == cudaSuccess ? cudaStreamWaitEvent(user.stream(), done, 0) : rec;
  if (wait != cudaSuccess) {
    cudaStreamSynchronize(st.stream.stream());  // the buffer must not go back while read
    cudaEventDestroy(done);
    check_cuda(wait, "joining the caller's stream");
  }
  st.inflight.emplace_back(done, std::move(cpu));
  // Used on the caller's stream: not handed out again before the caller's work is done.
  out.record_stream(user);
  // A few copies in flight at most: each holds a pool buffer Rust needs for later batches.
  while (st.inflight.size() > 2) {
    cudaEventSynchronize(st.inflight.front().first);
    cudaEventDestroy(st.inflight.front().first);
    st.inflight.pop_front();
  }
  return out;
}

void HostUploader::close() noexcept {
  if (!state_ || state_->closed) return;
  state_->closed = true;
  try {
    c10::cuda::CUDAGuard guard(state_->device);
    state_->drain();  // drops the CPU tensors: their buffers go back to Rust
    for (auto& [p, n] : state_->pinned) cudaHostUnregister(p);
    state_->pinned.clear();
  } catch (...) {
  }
}

DeviceRunner::DeviceRunner(const at::Device& device) : state_(std::make_unique<State>(device)) {}

DeviceRunner::~DeviceRunner() { close(); }

void DeviceRunner::close() noexcept {
  if (!state_ || state_->closed) return;
  state_->closed = true;
  try {
    c10::cuda::CUDAGuard guard(state_->device);
    for (auto& q : state_->queue) {
      if (q.done) {
        cudaEventSynchronize(q.done);
        cudaEventDestroy(q.done);
      }
    }
    state_->queue.clear();  // drops the batches: their slabs go back to Rust
    if (state_->store_event) {
      cudaEventSynchronize(state_->store_event);
      cudaEventDestroy(state_->store_event);
      state_->store_event = nullptr;
    }
    state_->store = at::Tensor();
    for (auto& [p, n] : state_->pinned) cudaHostUnregister(p);
    state_->pinned.clear();
  } catch (...) {
  }
}

size_t DeviceRunner::queued() const noexcept { return state_->queue.size(); }

void DeviceRunner::enqueue_error(std::exception_ptr error, bool from_batch) noexcept {
  Queued q;
  q.error = std::move(error);
  q.from_batch = from_batch;
  state_->queue.push_back(std::move(q));
}

void DeviceRunner::enqueue(rust::Box<ffi::Batch> batch) noexcept {
  const uint64_t seq = batch->seq();
  const bool keeps = batch->store_keep_ops().size() != 0;
  try {
    on_device("launching a batch on " + state_->device.str(), [&] { launch(std::move(batch)); });
  } catch (...) {
    if (keeps) state_->keeper_failed(seq);
    enqueue_error(std::current_exception(), /*from_batch=*/true);
  }
}

bool DeviceRunner::next_is_batch() const noexcept {
  return !state_->queue.empty() && state_->queue.front().from_batch;
}

DeviceRunner::Taken DeviceRunner::take() {
  State& st = *state_;
  if (st.queue.empty()) throw TryAgain("no device batch queued");
  Queued q = std::move(st.queue.front());
  st.queue.pop_front();
  if (q.error) std::rethrow_exception(q.error);
  c10::cuda::CUDAGuard guard(st.device);
  // A batch that kept chunks and fails here is remembered: the batches fetching them fail.
  auto launched = [&]() -> Taken {
  // The status words arrive with `done`, usually long before the caller asks.
  const cudaError_t rc = cudaEventSynchronize(q.done);
  cudaEvent_t done = q.done;
  if (rc != cudaSuccess) {
    cudaEventDestroy(done);
    check_cuda(rc, "waiting for the batch's device work");
  }
  for (const uint64_t p : q.producers) {
    if (st.failed_keepers.count(p)) {
      cudaEventDestroy(done);
      throw DecodeError("batch " + std::to_string(q.seq) + " reads chunks that batch " + std::to_string(p) +
                        " was to decode and keep in the device chunk store, and batch " + std::to_string(p) +
                        " failed");
    }
  }
  const auto* r = reinterpret_cast<const uint32_t*>(q.h_result.data_ptr<int32_t>());
  for (size_t i = 0; i < q.checks.size(); ++i) {
    if (r[2 * i] != 0) {
      cudaEventDestroy(done);
      const auto& ops = q.checks[i].op_index;
      const uint32_t first = r[2 * i + 1] < ops.size() ? ops[r[2 * i + 1]] : 0;
      throw DecodeError(std::to_string(r[2 * i]) + " " + q.checks[i].codec +
                        " stream(s) failed to decode on the GPU; first: " +
                        std::string((*q.batch)->decode_op_context(first)));
    }
  }
  if (q.checksums && r[2 * q.checks.size()] != 0) {
    const uint32_t* c = r + 2 * q.checks.size();
    cudaEventDestroy(done);
    const rust::Slice<const ffi::GpuChecksumOp> sums = (*q.batch)->checksum_ops();
    const uint32_t first = c[1] < sums.size() ? sums[c[1]].decode_op : 0;
    throw DecodeError("zstd content checksum mismatch (XXH64 of the decoded bytes, checked on the GPU) in " +
                      std::to_string(c[0]) + " frame(s); first: " +
                      std::string((*q.batch)->decode_op_context(first)));
  }
  // The caller's current stream waits for the batch (an event, not a synchronisation).
  const c10::cuda::CUDAStream user = c10::cuda::getCurrentCUDAStream(st.device.index());
  const cudaError_t wait_rc = cudaStreamWaitEvent(user.stream(), done, 0);
  cudaEventDestroy(done);
  check_cuda(wait_rc, "joining the caller's stream");
  // Allocated on the runner's stream, used on the caller's: the caching allocator must not
  // hand it out again before the caller's work on it is done.
  q.out.record_stream(user);
  return {std::move(q.out), std::move(q.samples)};
  };
  try {
    return launched();
  } catch (...) {
    if (q.keeps) st.keeper_failed(q.seq);
    throw;
  }
}

void DeviceRunner::launch(rust::Box<ffi::Batch> batch) {
  State& st = *state_;
  if (st.closed) throw ShutdownError("device runner closed");
  c10::cuda::CUDAGuard guard(st.device);
  const c10::cuda::CUDAStream own = st.streams[st.launched++ % st.streams.size()];
  c10::cuda::CUDAStreamGuard stream_guard(own);  // torch allocations below: this stream
  const cudaStream_t stream = own.stream();
  Queued q;
  q.samples = batch->sample_records();
  q.seq = batch->seq();

  const rust::Vec<int64_t> shape_rs = batch->shape();
  const std::vector<int64_t> shape(shape_rs.begin(), shape_rs.end());
  int out_code;
  at::ScalarType out_type;
  switch (batch->out_dtype()) {
    case ffi::OutDtype::F32:
      out_code = gpu::kOutF32;
      out_type = at::kFloat;
      break;
    case ffi::OutDtype::Bf16:
      out_code = gpu::kOutBf16;
      out_type = at::kBFloat16;
      break;
    default:
      // Config::decodes_on_device routes integer outputs to the CPU: a bug if seen.
      throw InternalError("the GPU path outputs f32 or bf16 only");
  }
  uint32_t sample4[4];
  if (!gpu::pad_shape4(shape.data() + 1, shape.size() - 1, sample4)) {
    throw InvalidArgument("the GPU path supports samples of rank 1 to 4");
  }
  const uint64_t sample_voxels = uint64_t(sample4[0]) * sample4[1] * sample4[2] * sample4[3];

  const rust::Slice<const ffi::GpuDecodeOp> dec = batch->decode_ops();
  const rust::Slice<const ffi::GpuChecksumOp> sums = batch->checksum_ops();
  const rust::Slice<const ffi::GpuUnshuffleOp> unsh = batch->unshuffle_ops();
  const rust::Slice<const ffi::GpuCopyOp> copies = batch->copy_ops();
  const uint64_t decoded_bytes = batch->decoded_bytes();
  const rust::Slice<const ffi::GpuDecodeOp> fetch = batch->store_fetch_ops();
  const rust::Slice<const ffi::GpuDecodeOp> keep_ops = batch->store_keep_ops();
  const uint64_t store_bytes = batch->device_store_bytes();
  rust::Slice<uint8_t> slab = batch->staging();
  uint64_t staged = 0;
  for (const auto& op : dec) staged = std::max<uint64_t>(staged, op.src_offset + op.src_len);

  for (const std::string& msg : {gpu::check_decode_ops(dec.data(), dec.size(), slab.size(), decoded_bytes),
                                 gpu::check_checksum_ops(sums.data(), sums.size(), dec.data(), dec.size()),
                                 gpu::check_unshuffle_ops(unsh.data(), unsh.size(), decoded_bytes),
                                 gpu::check_copy_ops(copies.data(), copies.size(), decoded_bytes,
                                                     static_cast<uint32_t>(shape[0]), sample4)}) {
    if (!msg.empty()) throw DecodeError("device ops rejected: " + msg);
  }
  // Device chunk store copies: pool -> arena (fetch), arena -> pool (keep), raw copies only.
  const bool store_copies = fetch.size() || keep_ops.size();
  if (store_copies) {
    for (const std::string& msg : {gpu::check_decode_ops(fetch.data(), fetch.size(), store_bytes, decoded_bytes),
                                   gpu::check_decode_ops(keep_ops.data(), keep_ops.size(), decoded_bytes, store_bytes)}) {
      if (!msg.empty()) throw DecodeError("device chunk store ops rejected: " + msg);
    }
    for (const auto* ops : {&fetch, &keep_ops}) {
      if (gpu::count_decode_ops(ops->data(), ops->size(), static_cast<uint32_t>(ffi::DecodeCodec::Copy)) != ops->size()) {
        throw DecodeError("device chunk store ops rejected: not all raw copies");
      }
    }
    if (!st.store.defined()) {
      // Once, for the pipeline's life (a pipeline has one device and one pool size).
      st.store = device_bytes(store_bytes, st.device);
      check_cuda(cudaEventCreateWithFlags(&st.store_event, cudaEventDisableTiming), "store event");
    } else if (static_cast<uint64_t>(st.store.numel()) < store_bytes) {
      throw InternalError("device chunk store: the pool has " + std::to_string(st.store.numel()) +
                          " bytes, a batch asks for " + std::to_string(store_bytes));
    }
    q.keeps = keep_ops.size() != 0;
    const rust::Slice<const uint64_t> producers = batch->store_producers();
    q.producers.assign(producers.begin(), producers.end());
  }

  // Pin the part of the slab in use (Rust recycles a fixed set of slabs).
  st.pin(slab.data(), staged, slab.size());

  at::Tensor d_staging = device_bytes(staged, st.device);
  if (staged) check_cuda(cudaMemcpyAsync(d_staging.data_ptr(), slab.data(), staged, cudaMemcpyHostToDevice, stream), "staging H2D");
  at::Tensor d_arena = device_bytes(decoded_bytes, st.device);
  const auto* d_stage_p = static_cast<const uint8_t*>(d_staging.data_ptr());
  auto* d_arena_p = static_cast<uint8_t*>(d_arena.data_ptr());

  // Decode: raw copies in one launch, then one nvCOMP call per codec.
  at::Tensor d_dec = upload(dec.data(), dec.size(), st.device, stream);
  uint64_t max_copy = 0;
  for (const auto& op : dec) if (op.codec == static_cast<uint32_t>(ffi::DecodeCodec::Copy)) max_copy = std::max<uint64_t>(max_copy, op.dst_len);
  if (gpu::count_decode_ops(dec.data(), dec.size(), static_cast<uint32_t>(ffi::DecodeCodec::Copy))) {
    check_cuda(gpu::launch_decode_copy(reinterpret_cast<const ffi::GpuDecodeOp*>(d_dec.data_ptr()),
                                       static_cast<int>(dec.size()), d_stage_p, d_arena_p, stream, max_copy),
               "raw chunk copy");
  }
  struct Check {
    gpu::DecompressArgs args;
    nvcomp::Codec codec;
  };
  std::vector<Check> checks;
  std::vector<at::Tensor> keep;  // device buffers that must live until the launches ran
  at::Tensor h_result = at::zeros({8}, at::TensorOptions().dtype(at::kInt).pinned_memory(true));
  at::Tensor d_result = at::empty({8}, at::TensorOptions().dtype(at::kInt).device(st.device));
  for (nvcomp::Codec codec : {nvcomp::Codec::Zstd, nvcomp::Codec::Lz4}) {
    const size_t n = gpu::count_decode_ops(dec.data(), dec.size(), static_cast<uint32_t>(codec));
    if (!n) continue;
    if (!nvcomp::available()) throw CudaError("nvCOMP is needed for this batch: " + nvcomp::why_unavailable());
    const size_t arg_bytes = gpu::decompress_args_bytes(n);
    at::Tensor h_args = at::empty({static_cast<int64_t>(arg_bytes)}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    at::Tensor d_args = device_bytes(arg_bytes, st.device);
    gpu::DecompressArgs args = gpu::pack_decompress_args(dec.data(), dec.size(), static_cast<uint32_t>(codec), d_stage_p,
                                                         d_arena_p, h_args.data_ptr(), d_args.data_ptr());
    check_cuda(cudaMemcpyAsync(d_args.data_ptr(), h_args.data_ptr(), arg_bytes, cudaMemcpyHostToDevice, stream), "nvCOMP args H2D");
    size_t temp_bytes = 0;
    nvcomp::Status rc = nvcomp::decompress_temp_bytes(codec, args.n, args.max_dst_bytes, args.total_dst_bytes, &temp_bytes, stream);
    if (rc != nvcomp::Status::Success) throw CudaError(std::string("nvCOMP temp size: ") + nvcomp::status_name(rc));
    at::Tensor d_temp = device_bytes(temp_bytes, st.device);
    rc = nvcomp::batched_decompress(codec, args.d_src_ptrs, args.d_src_bytes, args.d_dst_bytes, args.d_actual,
                                    args.d_dst_ptrs, args.n, d_temp.data_ptr(), temp_bytes,
                                    reinterpret_cast<nvcomp::Status*>(args.d_statuses), stream);
    if (rc != nvcomp::Status::Success) throw CudaError(std::string("nvCOMP batched decompress: ") + nvcomp::status_name(rc));
    keep.insert(keep.end(), {d_args, d_temp});
    q.host_keep.push_back(h_args);
    checks.push_back({std::move(args), codec});
  }
  // Decode statuses into pinned memory; `take` reads them after the batch's event, so a
  // corrupt chunk fails its own batch without a synchronisation here. Then the zstd content
  // checksums (frames with the flag only: no checksum ops, no launch), before unshuffling.
  q.h_result = h_result;
  const size_t n_words = 2 * checks.size() + (sums.size() ? 2 : 0);
  if (n_words) {
    std::vector<int32_t> init(n_words, 0);
    for (size_t i = 1; i < n_words; i += 2) init[i] = -1;  // UINT32_MAX
    check_cuda(cudaMemcpyAsync(d_result.data_ptr(), init.data(), init.size() * 4, cudaMemcpyHostToDevice, stream), "status init");
    for (size_t i = 0; i < checks.size(); ++i) {
      const auto& a = checks[i].args;
      check_cuda(gpu::launch_decode_status_check(a.d_statuses, a.d_actual, a.d_dst_bytes, a.n,
                                                 reinterpret_cast<uint32_t*>(d_result.data_ptr<int32_t>() + 2 * i), stream),
                 "decode status check");
      // The first failing op is known only later; name the batch's chunks lazily through
      // the op index (kept) and the batch's own context strings.
      q.checks.push_back({a.op_index, nvcomp::codec_name(checks[i].codec)});
    }
    if (sums.size()) {
      at::Tensor d_sums = upload(sums.data(), sums.size(), st.device, stream);
      check_cuda(gpu::launch_checksum_check(reinterpret_cast<const ffi::GpuChecksumOp*>(d_sums.data_ptr()), sums.size(),
                                            reinterpret_cast<const ffi::GpuDecodeOp*>(d_dec.data_ptr()), d_arena_p,
                                            reinterpret_cast<uint32_t*>(d_result.data_ptr<int32_t>() + 2 * checks.size()), stream),
                 "zstd checksum check");
      keep.push_back(d_sums);
      q.checksums = true;
    }
    check_cuda(cudaMemcpyAsync(h_result.data_ptr(), d_result.data_ptr(), n_words * 4, cudaMemcpyDeviceToHost, stream), "status D2H");
    keep.push_back(d_result);
  }

  // Unshuffle blosc blocks: from a scratch copy of the arena back into the arena.
  if (unsh.size()) {
    at::Tensor scratch = d_arena.clone();
    at::Tensor d_unsh = upload(unsh.data(), unsh.size(), st.device, stream);
    uint64_t max_len = 0;
    for (const auto& op : unsh) max_len = std::max<uint64_t>(max_len, op.len);
    check_cuda(gpu::launch_unshuffle(reinterpret_cast<const ffi::GpuUnshuffleOp*>(d_unsh.data_ptr()),
                                     static_cast<int>(unsh.size()), static_cast<const uint8_t*>(scratch.data_ptr()),
                                     d_arena_p, stream, max_len),
               "unshuffle");
    keep.insert(keep.end(), {scratch, d_unsh});
  }

  // Device chunk store: after this batch's decoding (same stream) and every earlier batch's
  // store copies (the event), copy resident chunks into the arena, then this batch's chunks
  // to keep into the pool. The fetches read slots no keep of this batch writes (the planner
  // holds every entry a batch reads), so fetch-then-keep in one stream is safe.
  if (store_copies) {
    auto* d_store_p = static_cast<uint8_t*>(st.store.data_ptr());
    check_cuda(cudaStreamWaitEvent(stream, st.store_event, 0), "waiting for earlier store copies");
    for (const auto& [ops, src, dst] : {std::tuple{&fetch, static_cast<const uint8_t*>(d_store_p), d_arena_p},
                                         std::tuple{&keep_ops, static_cast<const uint8_t*>(d_arena_p), d_store_p}}) {
      if (!ops->size()) continue;
      at::Tensor d_ops = upload(ops->data(), ops->size(), st.device, stream);
      uint64_t max_len = 0;
      for (const auto& op : *ops) max_len = std::max<uint64_t>(max_len, op.dst_len);
      check_cuda(gpu::launch_decode_copy(reinterpret_cast<const ffi::GpuDecodeOp*>(d_ops.data_ptr()),
                                         static_cast<int>(ops->size()), src, dst, stream, max_len),
                 ops == &fetch ? "device chunk store fetch" : "device chunk store keep");
      keep.push_back(d_ops);
    }
    check_cuda(cudaEventRecord(st.store_event, stream), "store event record");
  }

  // Assemble: one launch over every copy and fill op.
  at::Tensor out = at::empty(shape, at::TensorOptions().dtype(out_type).device(st.device));
  std::vector<uint64_t> prefix(copies.size() + 1);
  const uint64_t total = gpu::copy_op_voxel_prefix(copies.data(), copies.size(), prefix.data());
  if (total) {
    at::Tensor d_copies = upload(copies.data(), copies.size(), st.device, stream);
    at::Tensor d_prefix = upload(prefix.data(), prefix.size(), st.device, stream);
    // The samples' transforms (Augment fused into assemble), one per sample, when pushed.
    const rust::Vec<ffi::SampleTransform> tfs = batch->sample_transforms();
    const ffi::SampleTransform* d_tfs = nullptr;
    bool intensity = false;
    if (!tfs.empty()) {
      at::Tensor d_t = upload(tfs.data(), tfs.size(), st.device, stream);
      d_tfs = reinterpret_cast<const ffi::SampleTransform*>(d_t.data_ptr());
      for (const auto& t : tfs) intensity = intensity || t.intensity;
      keep.push_back(d_t);
    }
    check_cuda(gpu::launch_assemble(reinterpret_cast<const ffi::GpuCopyOp*>(d_copies.data_ptr()),
                                    static_cast<int>(copies.size()), reinterpret_cast<const uint64_t*>(d_prefix.data_ptr()),
                                    total, d_arena_p, out.data_ptr(), out_code, sample_voxels, sample4, stream, d_tfs,
                                    intensity),
               "assemble");
    keep.insert(keep.end(), {d_copies, d_prefix});
  }
  // Buffers from torch's caching allocator are reused only after work queued on this stream
  // before their release: no record_stream needed, everything ran on `stream`.
  (void)keep;

  check_cuda(cudaEventCreateWithFlags(&q.done, cudaEventDisableTiming), "event");
  check_cuda(cudaEventRecord(q.done, stream), "event record");
  // Temporaries (staging, arena, temp, op arrays) are freed here: the caching allocator
  // reuses them only for later work on this same stream, after the kernels above.
  q.out = std::move(out);
  q.batch.emplace(std::move(batch));
  st.queue.push_back(std::move(q));
}

}  // namespace damacy::detail
