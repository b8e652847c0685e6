// Part of damacy_kernels_test (kernels_test.cu calls these): the fused augmentation kernel
// against a straightforward CPU reference, on random batches.
//
// Cases: 0..5 sample dims, extents 1..9, per sample a random axis map (a permutation whose
// cycles join axes of equal extent, random reversals; one sample in ten gets an invalid map,
// which the kernel applies as the identity), input and output in random memory orders (the
// batch dim included, sometimes with gaps), every storage code, intensity with and without
// noise. Reference: per output element, the source element by the map read literally, then
// float32 x * scale, + shift (two roundings), then + noise_std * z_j with z from the contract
// in double (tolerance for log/sqrt/sin/cos; everything else must match bit for bit).
//   host: augment_thread (augment_impl.cuh) over an emulated grid;
//   device: launch_augment; --bench: its time on Augment's batch of 32 x 64x128x128.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "augment_impl.cuh"
#include "damacy/detail/gpu_augment.h"

namespace dg = damacy::gpu;
namespace dd = damacy::gpu::detail;

namespace {

struct AugCase {
  dg::AugmentShape shape{};
  int dtype = 0;
  bool intensity = false;
  float factor = 0.0f;
  std::vector<int64_t> params;
  std::vector<std::vector<int>> src;  // per sample, per output axis: source axis (identity if invalid)
  std::vector<std::vector<bool>> rev;
  size_t in_elems = 0, out_elems = 0;
  std::vector<unsigned char> x;  // in_elems * elem
};

size_t elem_size(int dtype) {
  switch (dtype) {
    case dg::kAugF32: case dg::kAugBits32: return 4;
    case dg::kAugF16: case dg::kAugBf16: case dg::kAugBits16: return 2;
    case dg::kAugF64: case dg::kAugBits64: return 8;
    default: return 1;
  }
}

uint32_t float_bits(float f) {
  uint32_t v;
  std::memcpy(&v, &f, sizeof v);
  return v;
}

// Strides of a dense layout of `sizes` in memory order `order` (outermost first), with the
// innermost stride `gap` (1: dense).
std::vector<int64_t> layout(const std::vector<uint32_t>& sizes, const std::vector<int>& order, int64_t gap,
                            size_t* elems) {
  std::vector<int64_t> st(sizes.size());
  int64_t s = gap;
  for (size_t i = order.size(); i-- > 0;) {
    st[order[i]] = s;
    s *= sizes[order[i]];
  }
  *elems = static_cast<size_t>(s);
  return st;
}

AugCase make_case(std::mt19937_64& rng) {
  AugCase c;
  const int nd = static_cast<int>(rng() % 6);
  const uint32_t batch = 1 + static_cast<uint32_t>(rng() % 4);
  // a permutation of the sample axes; extents equal along its cycles
  std::vector<int> perm(nd);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<uint32_t> size(nd, 0);
  for (int d = 0; d < nd; ++d) {
    if (size[d]) continue;
    const uint32_t n = 1 + static_cast<uint32_t>(rng() % 9);
    for (int a = d; !size[a]; a = perm[a]) size[a] = n;
  }
  c.shape.batch = batch;
  c.shape.ndim = static_cast<uint32_t>(nd);
  uint64_t per = 1;
  for (int d = 0; d < nd; ++d) {
    c.shape.size[d] = size[d];
    per *= size[d];
  }
  c.shape.per_sample = static_cast<uint32_t>(per);
  std::vector<uint32_t> all{batch};
  all.insert(all.end(), size.begin(), size.end());
  std::vector<int> order(nd + 1);
  std::iota(order.begin(), order.end(), 0);
  if (rng() % 2) std::shuffle(order.begin(), order.end(), rng);
  auto in_st = layout(all, order, rng() % 4 == 0 ? 2 : 1, &c.in_elems);
  if (rng() % 2) std::shuffle(order.begin(), order.end(), rng);
  auto out_st = layout(all, order, 1, &c.out_elems);
  for (int d = 0; d <= nd; ++d) {
    c.shape.in_stride[d] = in_st[d];
    c.shape.out_stride[d] = out_st[d];
  }
  c.dtype = static_cast<int>(rng() % 8);
  c.intensity = c.dtype <= dg::kAugF64 && rng() % 4 != 0;
  const float std_ = rng() % 2 ? 0.5f + static_cast<float>(rng() % 100) / 50.0f : 0.0f;
  c.factor = c.intensity ? static_cast<float>(-2.0 * double(std_) * double(std_)) : 0.0f;
  for (uint32_t r = 0; r < batch; ++r) {
    std::vector<int> src(nd);
    std::vector<bool> rev(nd);
    uint64_t word = 0;
    for (int d = 0; d < nd; ++d) {
      src[d] = perm[d];  // output axis d reads source axis perm[d] (extents equal on cycles)
      rev[d] = rng() % 2;
      const int e = nd - d, se = nd - src[d];
      const uint64_t code = (se == e && !rev[d] && rng() % 2) ? 0 : uint64_t(se) | (rev[d] ? 0x10 : 0);
      word |= code << (8 * (e - 1));
    }
    if (nd > 0 && rng() % 10 == 0) {  // invalid: a source axis beyond the sample's
      word = (word & ~uint64_t(0xf)) | uint64_t(nd + 1 + rng() % (8 - nd));
      std::iota(src.begin(), src.end(), 0);
      rev.assign(nd, false);
    }
    std::shuffle(perm.begin(), perm.end(), rng);  // next sample: another map ...
    for (int d = 0; d < nd; ++d) {
      // ... that keeps the extents: only permutations within equal extents
      if (size[perm[d]] != size[d]) {
        std::iota(perm.begin(), perm.end(), 0);
        break;
      }
    }
    const float scale = 0.5f + static_cast<float>(rng() % 1000) / 500.0f;
    const float shift = rng() % 3 ? static_cast<float>(static_cast<int>(rng() % 600) - 300) / 100.0f : -0.0f;
    const uint64_t g = (rng() & 0x3fffffffu) << 1 | 1, b = rng() & 0x7fffffffu;
    c.params.push_back(static_cast<int64_t>(uint64_t(float_bits(scale)) | uint64_t(float_bits(shift)) << 32));
    c.params.push_back(static_cast<int64_t>(g | b << 32));
    c.params.push_back(static_cast<int64_t>(word));
    c.src.push_back(src);
    c.rev.push_back(rev);
  }
  const size_t es = elem_size(c.dtype);
  c.x.resize(c.in_elems * es);
  for (size_t i = 0; i < c.in_elems; ++i) {
    // finite values of moderate size for the float types; any bits otherwise
    const float v = static_cast<float>(static_cast<int>(rng() % 20001) - 10000) / 997.0f;
    unsigned char* p = c.x.data() + i * es;
    if (c.dtype == dg::kAugF32) std::memcpy(p, &v, 4);
    else if (c.dtype == dg::kAugF64) { const double dv = double(v) + 1e-9 * double(rng() % 1000); std::memcpy(p, &dv, 8); }
    else if (c.dtype == dg::kAugF16) { const __half h = __float2half_rn(v); std::memcpy(p, &h, 2); }
    else if (c.dtype == dg::kAugBf16) { const __nv_bfloat16 h = __float2bfloat16_rn(v); std::memcpy(p, &h, 2); }
    else for (size_t k = 0; k < es; ++k) p[k] = static_cast<unsigned char>(rng());
  }
  return c;
}

float load_float(const AugCase& c, size_t i) {
  const unsigned char* p = c.x.data() + i * elem_size(c.dtype);
  switch (c.dtype) {
    case dg::kAugF32: { float f; std::memcpy(&f, p, 4); return f; }
    case dg::kAugF64: { double d; std::memcpy(&d, p, 8); return static_cast<float>(d); }
    case dg::kAugF16: { __half h; std::memcpy(&h, p, 2); return __half2float(h); }
    default: { __nv_bfloat16 h; std::memcpy(&h, p, 2); return __bfloat162float(h); }
  }
}

double stored_float(const AugCase& c, const unsigned char* p) {
  switch (c.dtype) {
    case dg::kAugF32: { float f; std::memcpy(&f, p, 4); return f; }
    case dg::kAugF64: { double d; std::memcpy(&d, p, 8); return d; }
    case dg::kAugF16: { __half h; std::memcpy(&h, p, 2); return __half2float(h); }
    default: { __nv_bfloat16 h; std::memcpy(&h, p, 2); return __bfloat162float(h); }
  }
}

void store_float(const AugCase& c, unsigned char* p, float f) {
  switch (c.dtype) {
    case dg::kAugF32: std::memcpy(p, &f, 4); break;
    case dg::kAugF64: { const double d = f; std::memcpy(p, &d, 8); break; }
    case dg::kAugF16: { const __half h = __float2half_rn(f); std::memcpy(p, &h, 2); break; }
    default: { const __nv_bfloat16 h = __float2bfloat16_rn(f); std::memcpy(p, &h, 2); break; }
  }
}

double contract_z(uint32_t g, uint32_t b, uint32_t j) {
  const uint32_t m2 = j & ~1u;
  const double u0 = ((dd::lowbias32(g * m2 + b) >> 9) + 0.5) / 8388608.0;
  const double u1 = ((dd::lowbias32(g * (m2 + 1) + b) >> 9) + 0.5) / 8388608.0;
  const double r = std::sqrt(-2.0 * std::log(u0)), t = 2.0 * M_PI * u1;
  return (j & 1u) ? r * std::sin(t) : r * std::cos(t);
}

// Compares `out` (out_elems elements) with the reference; returns the first mismatch, or "".
std::string check(const AugCase& c, const std::vector<unsigned char>& out) {
  const size_t es = elem_size(c.dtype);
  const int nd = static_cast<int>(c.shape.ndim);
  const double noise_std = std::sqrt(-double(c.factor) / 2.0);
  std::vector<uint32_t> i(nd);
  for (uint64_t r = 0; r < c.shape.batch; ++r) {
    const uint64_t w0 = static_cast<uint64_t>(c.params[3 * r]), w1 = static_cast<uint64_t>(c.params[3 * r + 1]);
    float scale, shift;
    const uint32_t sb = static_cast<uint32_t>(w0), tb = static_cast<uint32_t>(w0 >> 32);
    std::memcpy(&scale, &sb, 4);
    std::memcpy(&shift, &tb, 4);
    for (uint32_t j = 0; j < c.shape.per_sample; ++j) {
      uint32_t rem = j;
      for (int d = nd - 1; d >= 0; --d) {
        i[d] = rem % c.shape.size[d];
        rem /= c.shape.size[d];
      }
      int64_t in = static_cast<int64_t>(r) * c.shape.in_stride[0], o = static_cast<int64_t>(r) * c.shape.out_stride[0];
      for (int d = 0; d < nd; ++d) {
        const int a = c.src[r][d];
        in += c.shape.in_stride[1 + a] * (c.rev[r][d] ? c.shape.size[d] - 1 - i[d] : i[d]);
        o += c.shape.out_stride[1 + d] * i[d];
      }
      const unsigned char* got = out.data() + static_cast<size_t>(o) * es;
      const std::string where = "sample " + std::to_string(r) + " j " + std::to_string(j) + " dtype " +
                                std::to_string(c.dtype) + " nd " + std::to_string(nd);
      if (!c.intensity) {
        if (std::memcmp(got, c.x.data() + static_cast<size_t>(in) * es, es) != 0) return where + ": geometry";
        continue;
      }
      volatile float p = load_float(c, static_cast<size_t>(in)) * scale;
      volatile float y = p + shift;
      if (c.factor == 0.0f) {
        std::vector<unsigned char> want(es);
        store_float(c, want.data(), y);
        if (std::memcmp(got, want.data(), es) != 0) {
          return where + ": scale/shift " + std::to_string(stored_float(c, got)) + " vs " + std::to_string(y);
        }
        continue;
      }
      const double want = double(y) + noise_std * contract_z(static_cast<uint32_t>(w1), static_cast<uint32_t>(w1 >> 32), j);
      const double rel = c.dtype == dg::kAugF16 ? 0x1p-10 : c.dtype == dg::kAugBf16 ? 0x1p-7 : 1e-6;
      const double v = stored_float(c, got);
      if (!(std::fabs(v - want) <= 1e-4 + rel * std::fabs(want))) {
        return where + ": noise " + std::to_string(v) + " vs " + std::to_string(want);
      }
    }
  }
  return "";
}

template <class T, bool kI, class Index>
void emulate_with(const AugCase& c, std::vector<unsigned char>& out) {
  const uint64_t per_block = uint64_t(dd::kAugThreads) * dd::kAugPairsPerThread;
  const uint64_t blocks = (dd::aug_pairs(c.shape) + per_block - 1) / per_block;
  for (uint64_t s = 0; s < c.shape.batch; ++s) {
    for (uint64_t bx = 0; bx < blocks; ++bx) {
      for (uint32_t t = 0; t < static_cast<uint32_t>(dd::kAugThreads); ++t) {
        dd::augment_thread<T, kI, Index>(bx, t, s, reinterpret_cast<const T*>(c.x.data()),
                                         reinterpret_cast<T*>(out.data()), c.params.data(), c.shape, c.factor);
      }
    }
  }
}

template <class T, bool kI>
void emulate(const AugCase& c, std::vector<unsigned char>& out) {
  // both index widths (the launcher picks int32_t where it fits): the second pass must
  // write the same, the first pass's output is checked
  if (dd::aug_fits_int32(c.shape)) emulate_with<T, kI, int32_t>(c, out);
  std::vector<unsigned char> wide(out.size(), 0xab);
  emulate_with<T, kI, int64_t>(c, wide);
  if (!dd::aug_fits_int32(c.shape)) out = wide;
  else if (wide != out) out.assign(out.size(), 0xcd);  // fails the check below
}

void emulate_case(const AugCase& c, std::vector<unsigned char>& out) {
  if (c.intensity) {
    switch (c.dtype) {
      case dg::kAugF32: return emulate<float, true>(c, out);
      case dg::kAugF16: return emulate<__half, true>(c, out);
      case dg::kAugBf16: return emulate<__nv_bfloat16, true>(c, out);
      default: return emulate<double, true>(c, out);
    }
  }
  switch (elem_size(c.dtype)) {
    case 1: return emulate<uint8_t, false>(c, out);
    case 2: return emulate<uint16_t, false>(c, out);
    case 4: return emulate<uint32_t, false>(c, out);
    default: return emulate<uint64_t, false>(c, out);
  }
}

int report(const char* name, int pass, int fail) {
  std::printf("%-34s %4d pass %4d fail\n", name, pass, fail);
  return fail;
}

}  // namespace

int augment_host_suite(uint64_t seed, int n_cases) {
  std::mt19937_64 rng(seed ^ 0xa5a5);
  int pass = 0, fail = 0;
  for (int k = 0; k < 10 * n_cases; ++k) {
    const AugCase c = make_case(rng);
    std::vector<unsigned char> out(c.out_elems * elem_size(c.dtype), 0xab);
    emulate_case(c, out);
    const std::string e = check(c, out);
    if (e.empty()) {
      ++pass;
    } else if (++fail <= 10) {
      std::printf("  FAIL host augment case %d: %s\n", k, e.c_str());
    }
  }
  return report("host augment (emulated grid)", pass, fail);
}

int augment_device_suite(uint64_t seed, int n_cases) {
  std::mt19937_64 rng(seed ^ 0xa5a5);
  int pass = 0, fail = 0;
  for (int k = 0; k < 10 * n_cases; ++k) {
    const AugCase c = make_case(rng);
    const size_t es = elem_size(c.dtype);
    std::vector<unsigned char> out(c.out_elems * es, 0xab);
    void *dx = nullptr, *dout = nullptr, *dp = nullptr;
    bool ok = cudaMalloc(&dx, c.x.size()) == cudaSuccess && cudaMalloc(&dout, out.size()) == cudaSuccess &&
              cudaMalloc(&dp, c.params.size() * 8) == cudaSuccess &&
              cudaMemcpy(dx, c.x.data(), c.x.size(), cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(dout, out.data(), out.size(), cudaMemcpyHostToDevice) == cudaSuccess &&
              cudaMemcpy(dp, c.params.data(), c.params.size() * 8, cudaMemcpyHostToDevice) == cudaSuccess;
    ok = ok && dg::launch_augment(dx, dout, static_cast<const int64_t*>(dp), c.shape, c.dtype, c.intensity, c.factor,
                                  nullptr) == cudaSuccess;
    ok = ok && cudaMemcpy(out.data(), dout, out.size(), cudaMemcpyDeviceToHost) == cudaSuccess;
    std::string e = ok ? check(c, out) : std::string("CUDA call failed: ") + cudaGetErrorName(cudaGetLastError());
    // The same rows by value in the launch (batches of at most kAugmentArgRows): the same output.
    if (e.empty() && c.shape.batch <= uint64_t(dg::kAugmentArgRows)) {
      dg::AugmentArgRows rows{};
      std::memcpy(rows.w, c.params.data(), c.params.size() * 8);
      std::vector<unsigned char> by_value(out.size(), 0);
      ok = cudaMemset(dout, 0, out.size()) == cudaSuccess &&
           dg::launch_augment(dx, dout, nullptr, c.shape, c.dtype, c.intensity, c.factor, nullptr, &rows) == cudaSuccess &&
           cudaMemcpy(by_value.data(), dout, out.size(), cudaMemcpyDeviceToHost) == cudaSuccess;
      if (!ok) e = std::string("CUDA call failed (rows by value): ") + cudaGetErrorName(cudaGetLastError());
      else if (by_value != out) e = "rows by value: another output than the device table's";
    }
    cudaFree(dx);
    cudaFree(dout);
    cudaFree(dp);
    if (e.empty()) {
      ++pass;
    } else if (++fail <= 10) {
      std::printf("  FAIL device augment case %d: %s\n", k, e.c_str());
    }
  }
  return report("device augment (launch_augment)", pass, fail);
}

// --bench: the kernel alone on Augment's H200 workload, batch 32 x 64x128x128: f32 image with
// intensity + noise, u8 label geometry-only; every sample turned once and flipped (reads
// across rows: the slow case).
void augment_bench() {
  dg::AugmentShape s{};
  s.batch = 32;
  s.ndim = 3;
  s.size[0] = 64;
  s.size[1] = 128;
  s.size[2] = 128;
  s.per_sample = 64u * 128u * 128u;
  s.in_stride[3] = s.out_stride[3] = 1;
  s.in_stride[2] = s.out_stride[2] = 128;
  s.in_stride[1] = s.out_stride[1] = 128 * 128;
  s.in_stride[0] = s.out_stride[0] = int64_t(s.per_sample);
  const uint64_t n = s.batch * s.per_sample;
  std::vector<int64_t> params;
  for (uint64_t r = 0; r < s.batch; ++r) {
    // output axis -1 reads source axis -2 backwards, -2 reads -1 (k = 1), axis -3 flipped
    const uint64_t word = uint64_t(2 | 0x10) | uint64_t(1) << 8 | uint64_t(3 | 0x10) << 16;
    params.push_back(static_cast<int64_t>(uint64_t(float_bits(1.1f)) | uint64_t(float_bits(0.1f)) << 32));
    params.push_back(static_cast<int64_t>((2 * r + 12345) | uint64_t(777 + r) << 32));
    params.push_back(static_cast<int64_t>(word));
  }
  void *dx = nullptr, *dout = nullptr, *dp = nullptr;
  if (cudaMalloc(&dx, n * 4) != cudaSuccess || cudaMalloc(&dout, n * 4) != cudaSuccess ||
      cudaMalloc(&dp, params.size() * 8) != cudaSuccess) {
    std::printf("augment bench: cudaMalloc failed\n");
    return;
  }
  cudaMemset(dx, 0, n * 4);
  cudaMemcpy(dp, params.data(), params.size() * 8, cudaMemcpyHostToDevice);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  struct Run { const char* name; int dtype; bool intensity; float factor; };
  for (const Run& run : {Run{"f32 scale/shift + noise", dg::kAugF32, true, -0.02f},
                         Run{"f32 scale/shift", dg::kAugF32, true, 0.0f},
                         Run{"f32 geometry only", dg::kAugF32, false, 0.0f},
                         Run{"u8 label geometry", dg::kAugBits8, false, 0.0f}}) {
    const double bytes = 2.0 * double(n) * (run.dtype == dg::kAugBits8 ? 1 : 4);
    float best = 1e30f;
    for (int rep = 0; rep < 20; ++rep) {
      cudaEventRecord(a);
      dg::launch_augment(dx, dout, static_cast<const int64_t*>(dp), s, run.dtype, run.intensity, run.factor, nullptr);
      cudaEventRecord(b);
      cudaEventSynchronize(b);
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      if (rep > 1) best = std::min(best, ms);
    }
    std::printf("bench augment 32x64x128x128 %-26s %7.3f ms  %6.0f GB/s\n", run.name, best, bytes / (best * 1e6));
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaFree(dx);
  cudaFree(dout);
  cudaFree(dp);
}
