// Standalone check of the GPU kernels against straightforward CPU references.
//
//   kernels_test [--seed N] [--cases N] [--bench] [--host-only]
//
// 1. host emulation: runs the kernels' per-thread code (kernels_impl.cuh) over an emulated
//    grid on the CPU, so the index math and transposes are checked without a GPU;
// 2. device: launches the real kernels (launch_assemble, launch_{byte,bit,}unshuffle,
//    launch_decode_copy, launch_decode_status_check, launch_checksum_check) on random batches and compares every
//    byte with the references; prints "SKIP: no CUDA device" when there is none;
//    (the fused augmentation kernel's suites, host and device, are in augment_test.cu);
// 3. --bench (device only): throughput of assemble and unshuffle on a realistic batch, and
//    of the zstd checksum check (frames of 64 and 512 KiB).
//
// References: assemble = nested loops over each op's box with independent casts (f16 and
// bf16 decoded/rounded bit by bit); unshuffle = literal ports of c-blosc 1.21's generic
// routines (shuffle-generic.h, bitshuffle-generic.c, shuffle.c bit(un)shuffle wrappers),
// themselves checked by a shuffle -> unshuffle round trip.
//
// xxh64 = fixed vectors from libxxhash and libzstd (kXxhVectors, kXxhMoreVectors), for the
// one-thread form and the checksum kernel's warp form (emulated on the host, then on the device).
//
// Prints PASS/FAIL counts per suite; exits 1 on any failure, else 0.
#include <algorithm>
#include <array>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <array>
#include <vector>

#include "damacy/detail/gpu_kernels.h"
#include "damacy/detail/gpu_plan.h"
#include "damacy/src/ffi/records.rs.h"
#include "kernels_impl.cuh"

using damacy::ffi::GpuCopyOp;
using damacy::ffi::GpuDecodeOp;
using damacy::ffi::GpuUnshuffleOp;
namespace dg = damacy::gpu;
namespace dd = damacy::gpu::detail;

namespace {

struct Tally {
  const char* name;
  int pass = 0;
  int fail = 0;
  void check(bool ok, const std::string& what) {
    if (ok) {
      ++pass;
    } else {
      ++fail;
      if (fail <= 10) std::printf("  FAIL %s: %s\n", name, what.c_str());
    }
  }
  void report() const { std::printf("%-34s PASS %d  FAIL %d\n", name, pass, fail); }
};

// The device view of a bridge record (same layout, asserted in gpu_plan.cpp); a copy, so the
// host code never reads one type through another.
template <class View, class Op>
View view_of(const Op& op) {
  static_assert(sizeof(View) == sizeof(Op));
  View v;
  std::memcpy(static_cast<void*>(&v), &op, sizeof v);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Independent scalar references.

float bits_f32(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint32_t f32_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

float ref_f16(uint16_t h) {
  const bool neg = (h >> 15) != 0;
  const int exp = (h >> 10) & 0x1f;
  const int man = h & 0x3ff;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    v = man == 0 ? INFINITY : NAN;
  } else {
    v = std::ldexp(static_cast<float>(1024 + man), exp - 25);
  }
  return neg ? -v : v;
}

uint16_t ref_bf16(float f) {  // half::bf16::from_f32
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float ref_to_f32(uint64_t raw, uint32_t code) {
  switch (code) {
    case dd::kBool: return (raw & 0xff) ? 1.0f : 0.0f;
    case dd::kU8: return float(uint8_t(raw));
    case dd::kI8: return float(int8_t(uint8_t(raw)));
    case dd::kU16: return float(uint16_t(raw));
    case dd::kI16: return float(int16_t(uint16_t(raw)));
    case dd::kU32: return float(uint32_t(raw));
    case dd::kI32: return float(int32_t(uint32_t(raw)));
    case dd::kU64: return float(raw);
    case dd::kI64: return float(int64_t(raw));
    case dd::kF16: return ref_f16(uint16_t(raw));
    case dd::kBf16: return bits_f32(uint32_t(raw & 0xffff) << 16);
    case dd::kF32: return bits_f32(uint32_t(raw));
    case dd::kF64: {
      double d;
      std::memcpy(&d, &raw, 8);
      return float(d);
    }
  }
  return NAN;
}

bool is_wide_int(uint32_t code) {
  return code == dd::kU32 || code == dd::kI32 || code == dd::kU64 || code == dd::kI64;
}

// An integer at or next to an f32 rounding tie: 1 << s, plus random upper bits, plus half an
// f32 ulp, plus {0, +-1, small}; negated at random for signed codes. Catches double rounding
// (e.g. through f64) and truncation, which random bits almost never hit.
uint64_t tricky_int(std::mt19937_64& rng, uint32_t code) {
  const int bits = 8 * int(dg::src_dtype_size(code));
  const int s = 24 + int(rng() % uint64_t(bits - 24));
  const uint64_t half = uint64_t(1) << (s - 24);
  const uint64_t upper = (rng() << (s - 23)) & ((uint64_t(1) << s) - 1);
  const int64_t delta = std::vector<int64_t>{0, 1, -1, int64_t(rng() % 7) - 3}[rng() % 4];
  uint64_t raw = (uint64_t(1) << s) + upper + half + uint64_t(delta);
  if ((code == dd::kI32 || code == dd::kI64) && rng() % 2) raw = ~raw + 1;
  if (bits < 64) raw &= (uint64_t(1) << bits) - 1;
  return raw;
}

// ---------------------------------------------------------------------------------------------
// Assemble cases.

struct AsmCase {
  std::string label;
  uint32_t spb = 1;
  uint32_t shape[4] = {1, 1, 1, 1};
  int out_dtype = 0;
  std::vector<GpuCopyOp> ops;
  std::vector<uint8_t> decoded;
  std::vector<damacy::ffi::SampleTransform> tfs;  // one per sample, or none
  uint64_t sample_voxels() const { return uint64_t(shape[0]) * shape[1] * shape[2] * shape[3]; }
  size_t out_bytes() const { return spb * sample_voxels() * (out_dtype == 0 ? 4 : 2); }
};

// Splits [0, n) into pieces: cut points chosen at random.
std::vector<std::pair<uint32_t, uint32_t>> split(uint32_t n, int max_pieces, std::mt19937_64& rng) {
  std::vector<uint32_t> cuts{0, n};
  const int pieces = 1 + int(rng() % max_pieces);
  for (int i = 1; i < pieces && n > 1; ++i) cuts.push_back(1 + uint32_t(rng() % (n - 1)));
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  std::vector<std::pair<uint32_t, uint32_t>> out;
  for (size_t i = 0; i + 1 < cuts.size(); ++i) out.emplace_back(cuts[i], cuts[i + 1] - cuts[i]);
  return out;
}

// A batch whose samples are tiled by random boxes, each from its own random chunk or a fill.
AsmCase make_asm_case(std::mt19937_64& rng, int rank, const uint32_t* dims, uint32_t spb,
                      int max_pieces, int out_dtype, int only_dtype, std::string label) {
  AsmCase c;
  c.label = std::move(label);
  c.spb = spb;
  c.out_dtype = out_dtype;
  for (int d = 0; d < rank; ++d) c.shape[4 - rank + d] = dims[d];
  for (uint32_t s = 0; s < spb; ++s) {
    std::vector<std::pair<uint32_t, uint32_t>> cells[4];
    for (int d = 0; d < 4; ++d) {
      cells[d] = d < 4 - rank ? std::vector<std::pair<uint32_t, uint32_t>>{{0, 1}}
                              : split(c.shape[d], max_pieces, rng);
    }
    for (auto& a : cells[0]) for (auto& b : cells[1]) for (auto& e : cells[2]) for (auto& f : cells[3]) {
      GpuCopyOp op{};
      const std::pair<uint32_t, uint32_t>* box[4] = {&a, &b, &e, &f};
      op.sample = s;
      op.src_dtype = only_dtype >= 0 ? uint32_t(only_dtype) : uint32_t(rng() % dd::kNumSrcDtypes);
      const uint32_t size = dg::src_dtype_size(op.src_dtype);
      uint64_t chunk_voxels = 1;
      for (int d = 0; d < 4; ++d) {
        op.sample_start[d] = box[d]->first;
        op.extent[d] = box[d]->second;
        const uint32_t extra = d < 4 - rank ? 0 : uint32_t(rng() % 4);
        op.chunk_shape[d] = op.extent[d] + extra;
        op.chunk_start[d] = extra ? uint32_t(rng() % (extra + 1)) : 0;
        chunk_voxels *= op.chunk_shape[d];
      }
      op.fill = rng() % 5 == 0;
      op.fill_bits = rng();
      if (size < 8) op.fill_bits &= (uint64_t(1) << (8 * size)) - 1;
      if (!op.fill) {
        size_t at = (c.decoded.size() + 15) & ~size_t(15);
        if (rng() % 4 == 0) at += 1 + rng() % 7;  // misaligned chunk: byte-wise loads
        op.chunk_offset = at;
        c.decoded.resize(at + chunk_voxels * size);
        for (size_t i = at; i < c.decoded.size(); ++i) c.decoded[i] = uint8_t(rng());
      }
      c.ops.push_back(op);
      if (rng() % 16 == 0) {  // an empty op (no voxels) somewhere in the order
        GpuCopyOp empty = op;
        empty.extent[int(rng() % 4)] = 0;
        c.ops.push_back(empty);
      }
    }
  }
  std::shuffle(c.ops.begin(), c.ops.end(), rng);
  return c;
}

constexpr uint8_t kOutPattern = 0xcd;

std::vector<uint8_t> ref_assemble(const AsmCase& c) {
  std::vector<uint8_t> out(c.out_bytes(), kOutPattern);
  const uint64_t sv = c.sample_voxels();
  for (const GpuCopyOp& op : c.ops) {
    const uint32_t size = dg::src_dtype_size(op.src_dtype);
    for (uint32_t i0 = 0; i0 < op.extent[0]; ++i0)
      for (uint32_t i1 = 0; i1 < op.extent[1]; ++i1)
        for (uint32_t i2 = 0; i2 < op.extent[2]; ++i2)
          for (uint32_t i3 = 0; i3 < op.extent[3]; ++i3) {
            const uint32_t i[4] = {i0, i1, i2, i3};
            uint64_t raw = op.fill_bits;
            if (!op.fill) {
              uint64_t src = 0;
              for (int d = 0; d < 4; ++d) src = src * op.chunk_shape[d] + op.chunk_start[d] + i[d];
              raw = 0;
              std::memcpy(&raw, c.decoded.data() + op.chunk_offset + src * size, size);
            }
            uint64_t dst = 0;
            for (int d = 0; d < 4; ++d) dst = dst * c.shape[d] + op.sample_start[d] + i[d];
            dst += op.sample * sv;
            const float f = ref_to_f32(raw, op.src_dtype);
            if (c.out_dtype == 0) {
              std::memcpy(out.data() + dst * 4, &f, 4);
            } else {
              const uint16_t b = ref_bf16(f);
              std::memcpy(out.data() + dst * 2, &b, 2);
            }
          }
  }
  return out;
}

// Element-wise comparison; NaN equals NaN (payloads may differ from the CPU path).
std::string compare_out(const std::vector<uint8_t>& want, const std::vector<uint8_t>& got,
                        int out_dtype) {
  if (want.size() != got.size()) return "size differs";
  const size_t es = out_dtype == 0 ? 4 : 2;
  for (size_t i = 0; i < want.size() / es; ++i) {
    uint32_t a = 0, b = 0;
    std::memcpy(&a, want.data() + i * es, es);
    std::memcpy(&b, got.data() + i * es, es);
    if (a == b) continue;
    const bool nan_a = es == 4 ? (a & 0x7fffffffu) > 0x7f800000u : (a & 0x7fffu) > 0x7f80u;
    const bool nan_b = es == 4 ? (b & 0x7fffffffu) > 0x7f800000u : (b & 0x7fffu) > 0x7f80u;
    if (nan_a && nan_b) continue;
    char msg[160];
    std::snprintf(msg, sizeof msg, "element %zu: want 0x%x got 0x%x", i, a, b);
    return msg;
  }
  return {};
}

std::vector<uint64_t> prefix_of(const AsmCase& c) {
  std::vector<uint64_t> p(c.ops.size() + 1);
  dg::copy_op_voxel_prefix(c.ops.data(), c.ops.size(), p.data());
  return p;
}

// The assemble kernel, phase by phase, on the CPU (grid of tiles, then 256 threads).
template <class OutT>
void emulate_assemble_t(const AsmCase& c, std::vector<uint8_t>& out) {
  const std::vector<uint64_t> prefix = prefix_of(c);
  const uint64_t total = prefix.back();
  const int n = int(c.ops.size());
  dd::SampleGeom geom{};
  geom.sample_voxels = c.sample_voxels();
  for (int d = 0; d < 4; ++d) geom.shape[d] = c.shape[d];
  std::vector<dd::CopyOpView> ops(c.ops.size());
  for (size_t i = 0; i < ops.size(); ++i) ops[i] = view_of<dd::CopyOpView>(c.ops[i]);
  std::vector<dd::SampleTransformView> tfv(c.tfs.size());
  for (size_t i = 0; i < tfv.size(); ++i) tfv[i] = view_of<dd::SampleTransformView>(c.tfs[i]);
  dd::AsmPlan plans[dd::kAsmMaxTileOps];
  uint64_t firsts[dd::kAsmMaxTileOps + 1];
  for (uint64_t tile = 0; tile * dd::kAsmTile < total; ++tile) {
    const uint64_t tb = tile * dd::kAsmTile;
    const uint64_t te = std::min(tb + dd::kAsmTile, total);
    const int lo = dd::find_op_serial(prefix.data(), n, tb);
    const int hi = dd::find_op_serial(prefix.data(), n, te - 1);
    for (int g = lo; g <= hi; g += dd::kAsmMaxTileOps) {
      const int cnt = std::min(dd::kAsmMaxTileOps, hi - g + 1);
      for (int t = 0; t < cnt; ++t) {
        const dd::SampleTransformView* tf =
            c.tfs.empty() ? nullptr : &tfv[ops[g + t].sample];
        plans[t] = dd::make_asm_plan(ops[g + t], geom, tf);
      }
      for (int t = 0; t <= cnt; ++t) firsts[t] = prefix[g + t];
      for (uint32_t tid = 0; tid < uint32_t(dd::kAsmThreads); ++tid) {
        if (c.tfs.empty()) {
          dd::assemble_thread<OutT>(tid, tb, te, plans, firsts, cnt, c.decoded.data(),
                                    reinterpret_cast<OutT*>(out.data()));
        } else {
          dd::assemble_thread<OutT, true>(tid, tb, te, plans, firsts, cnt, c.decoded.data(),
                                          reinterpret_cast<OutT*>(out.data()));
        }
      }
    }
  }
}

std::vector<uint8_t> emulate_assemble(const AsmCase& c) {
  std::vector<uint8_t> out(c.out_bytes(), kOutPattern);
  if (c.out_dtype == 0) {
    emulate_assemble_t<float>(c, out);
  } else {
    emulate_assemble_t<__nv_bfloat16>(c, out);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Assemble with sample transforms (Augment fused): reference = the plain reference assemble,
// then per sample the axis map by nested loops (output axis d reads source axis src[d],
// backwards when rev[d]) and the intensity change of damacy::augment's contract.

struct MapOf {
  int src[4];
  bool rev[4];
};

MapOf decode_map4(uint64_t word) {
  MapOf m{};
  for (int d = 0; d < 4; ++d) {
    const int e = 4 - d;
    const uint32_t code = uint32_t(word >> (8 * (e - 1))) & 0xffu;
    const int se = (code & 0xfu) ? int(code & 0xfu) : e;
    m.src[d] = 4 - se;
    m.rev[d] = (code & 0x10u) != 0;
  }
  return m;
}

template <class OutT>
float ref_out_round(float f) {
  return dd::out_to_f32<OutT>(dd::f32_to_out<OutT>(f));
}

std::vector<uint8_t> ref_transform(const AsmCase& c, const std::vector<uint8_t>& plain) {
  if (c.tfs.empty()) return plain;
  std::vector<uint8_t> out(plain.size());
  const size_t es = c.out_dtype == 0 ? 4 : 2;
  const uint64_t sv = c.sample_voxels();
  const uint32_t* n = c.shape;
  for (uint32_t s = 0; s < c.spb; ++s) {
    const auto& t = c.tfs[s];
    const MapOf m = decode_map4(t.map);
    uint64_t j = 0;
    for (uint32_t i0 = 0; i0 < n[0]; ++i0)
      for (uint32_t i1 = 0; i1 < n[1]; ++i1)
        for (uint32_t i2 = 0; i2 < n[2]; ++i2)
          for (uint32_t i3 = 0; i3 < n[3]; ++i3, ++j) {
            const uint32_t i[4] = {i0, i1, i2, i3};
            uint32_t p[4] = {0, 0, 0, 0};
            for (int d = 0; d < 4; ++d) p[m.src[d]] = m.rev[d] ? n[d] - 1 - i[d] : i[d];
            const uint64_t from = s * sv + ((uint64_t(p[0]) * n[1] + p[1]) * n[2] + p[2]) * n[3] + p[3];
            std::memcpy(out.data() + (s * sv + j) * es, plain.data() + from * es, es);
            if (!t.intensity) continue;
            float f;
            if (es == 4) {
              std::memcpy(&f, out.data() + (s * sv + j) * es, 4);
            } else {
              __nv_bfloat16 b;
              std::memcpy(&b, out.data() + (s * sv + j) * es, 2);
              f = __bfloat162float(b);
            }
            float y = dd::aug_add(dd::aug_mul(f, t.scale), t.shift);
            if (t.noise_factor != 0.0f) {
              const uint32_t jj = uint32_t(j);
              const uint32_t c0 = t.noise_g * (jj & ~1u) + t.noise_b;
              const float r = std::sqrt(dd::aug_mul(std::log(dd::uniform23(c0)), t.noise_factor));
              const float th = dd::aug_mul(dd::uniform23(c0 + t.noise_g), float(6.283185307179586));
              y = dd::aug_add(y, dd::aug_mul(r, (jj & 1u) ? std::sin(th) : std::cos(th)));
            }
            if (es == 4) {
              std::memcpy(out.data() + (s * sv + j) * es, &y, 4);
            } else {
              const __nv_bfloat16 b = __float2bfloat16_rn(y);
              std::memcpy(out.data() + (s * sv + j) * es, &b, 2);
            }
          }
  }
  return out;
}

// A random valid transform per sample: a permutation of the 4 padded dims pairing equal
// extents only, random reversals, intensity (with noise) on about half of the cases.
void add_transforms(AsmCase& c, std::mt19937_64& rng) {
  const bool intensity = rng() % 2 == 0;
  const bool noise = rng() % 2 == 0;
  for (uint32_t s = 0; s < c.spb; ++s) {
    int perm[4] = {0, 1, 2, 3};
    for (int tries = 0; tries < 8; ++tries) {
      int q[4] = {0, 1, 2, 3};
      std::shuffle(q, q + 4, rng);
      bool ok = true;
      for (int d = 0; d < 4; ++d) ok = ok && c.shape[q[d]] == c.shape[d];
      if (ok) {
        std::copy(q, q + 4, perm);
        break;
      }
    }
    uint64_t word = 0;
    for (int d = 0; d < 4; ++d) {
      const uint64_t code = uint64_t(4 - perm[d]) | (rng() % 2 ? 0x10u : 0u);
      word |= code << (8 * (3 - d));
    }
    damacy::ffi::SampleTransform t{};
    t.map = word;
    t.intensity = intensity;
    t.scale = 0.5f + float(rng() % 1000) / 700.0f;
    t.shift = float(int(rng() % 2000) - 1000) / 300.0f;
    t.noise_g = uint32_t(rng()) | 1u;
    t.noise_b = uint32_t(rng()) & 0x7fffffffu;
    t.noise_factor = noise ? -2.0f * 0.3f * 0.3f : 0.0f;
    c.tfs.push_back(t);
  }
}

std::vector<AsmCase> transform_cases(std::mt19937_64& rng, int n_random) {
  std::vector<AsmCase> cases;
  const uint32_t squares[][4] = {{1, 1, 9, 9}, {1, 3, 6, 6}, {2, 5, 5, 5}, {1, 7, 4, 11}, {1, 1, 1, 300}, {4, 4, 4, 4}};
  for (int i = 0; i < n_random; ++i) {
    const uint32_t* sh = squares[i % 6];
    AsmCase c = make_asm_case(rng, 4, sh, 1 + uint32_t(rng() % 3), 3, int(rng() % 2), -1,
                              "transform " + std::to_string(i));
    add_transforms(c, rng);
    c.label += std::string(c.tfs[0].intensity ? " intensity" : " geometry") +
               (c.tfs[0].noise_factor != 0.0f ? "+noise" : "");
    cases.push_back(std::move(c));
  }
  return cases;
}

std::vector<AsmCase> asm_cases(std::mt19937_64& rng, int n_random) {
  std::vector<AsmCase> cases;
  // Every source dtype, both outputs, rank 1..4.
  for (int dt = 0; dt < int(dd::kNumSrcDtypes); ++dt) {
    for (int od = 0; od < 2; ++od) {
      const int rank = 1 + (dt + od) % 4;
      uint32_t dims[4];
      for (int d = 0; d < rank; ++d) dims[d] = 1 + uint32_t(rng() % (rank == 1 ? 700 : rank == 2 ? 60 : 17));
      cases.push_back(make_asm_case(rng, rank, dims, 2, 3, od, dt,
                                    "dtype " + std::to_string(dt) + " out " + std::to_string(od) +
                                        " rank " + std::to_string(rank)));
    }
  }
  // Random mixes.
  for (int i = 0; i < n_random; ++i) {
    const int rank = 1 + int(rng() % 4);
    uint32_t dims[4];
    for (int d = 0; d < rank; ++d) dims[d] = 1 + uint32_t(rng() % (d == rank - 1 ? 130 : 12));
    cases.push_back(make_asm_case(rng, rank, dims, 1 + uint32_t(rng() % 3), 4, int(rng() % 2), -1,
                                  "random " + std::to_string(i) + " rank " + std::to_string(rank)));
  }
  // Wide integers at f32 rounding ties (the device's conversion intrinsics).
  for (uint32_t dt : {dd::kU32, dd::kI32, dd::kU64, dd::kI64}) {
    uint32_t dims[2] = {40, 50};
    AsmCase c = make_asm_case(rng, 2, dims, 2, 2, int(dt % 2), int(dt), "ties dtype " + std::to_string(dt));
    const uint32_t size = dg::src_dtype_size(dt);
    for (GpuCopyOp& op : c.ops) {
      op.fill_bits = tricky_int(rng, dt);
      if (op.fill) continue;
      const uint64_t voxels = uint64_t(op.chunk_shape[0]) * op.chunk_shape[1] * op.chunk_shape[2] * op.chunk_shape[3];
      for (uint64_t v = 0; v < voxels; ++v) {
        const uint64_t x = tricky_int(rng, dt);
        std::memcpy(c.decoded.data() + op.chunk_offset + v * size, &x, size);
      }
    }
    cases.push_back(std::move(c));
  }
  // Many tiny ops in one tile (> kAsmMaxTileOps: the group loop).
  {
    uint32_t dims[1] = {3000};
    cases.push_back(make_asm_case(rng, 1, dims, 1, 900, 0, -1, "tiny ops rank 1"));
    uint32_t dims2[2] = {9, 300};
    cases.push_back(make_asm_case(rng, 2, dims2, 2, 60, 1, -1, "tiny ops rank 2"));
  }
  // Innermost extent 1 (carries on every step), and long rows crossing tiles.
  {
    uint32_t dims[4] = {3, 5, 70, 1};
    cases.push_back(make_asm_case(rng, 4, dims, 2, 2, 0, dd::kU16, "innermost 1"));
    uint32_t dims2[3] = {2, 3, 5000};
    cases.push_back(make_asm_case(rng, 3, dims2, 1, 2, 1, dd::kI32, "long rows"));
  }
  return cases;
}

// ---------------------------------------------------------------------------------------------
// c-blosc 1.21 generic (un)shuffle, ported literally.

void blosc_shuffle_generic(size_t type_size, size_t blocksize, const uint8_t* src, uint8_t* dest) {
  const size_t neblock_quot = blocksize / type_size;
  const size_t neblock_rem = blocksize % type_size;
  for (size_t j = 0; j < type_size; j++)
    for (size_t i = 0; i < neblock_quot; i++) dest[j * neblock_quot + i] = src[i * type_size + j];
  std::memcpy(dest + (blocksize - neblock_rem), src + (blocksize - neblock_rem), neblock_rem);
}

void blosc_unshuffle_generic(size_t type_size, size_t blocksize, const uint8_t* src, uint8_t* dest) {
  const size_t neblock_quot = blocksize / type_size;
  const size_t neblock_rem = blocksize % type_size;
  for (size_t i = 0; i < neblock_quot; i++)
    for (size_t j = 0; j < type_size; j++) dest[i * type_size + j] = src[j * neblock_quot + i];
  std::memcpy(dest + (blocksize - neblock_rem), src + (blocksize - neblock_rem), neblock_rem);
}

#define TRANS_BIT_8X8(x, t)                       \
  {                                               \
    t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AALL;    \
    x = x ^ t ^ (t << 7);                         \
    t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCLL;   \
    x = x ^ t ^ (t << 14);                        \
    t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0LL;   \
    x = x ^ t ^ (t << 28);                        \
  }

void bshuf_trans_byte_elem_scal(const uint8_t* in_b, uint8_t* out_b, size_t size, size_t elem_size) {
  size_t ii, jj, kk;
  for (ii = 0; ii + 7 < size; ii += 8)
    for (jj = 0; jj < elem_size; jj++)
      for (kk = 0; kk < 8; kk++) out_b[jj * size + ii + kk] = in_b[ii * elem_size + kk * elem_size + jj];
  for (ii = size - size % 8; ii < size; ii++)
    for (jj = 0; jj < elem_size; jj++) out_b[jj * size + ii] = in_b[ii * elem_size + jj];
}

void bshuf_trans_bit_byte_scal(const uint8_t* in, uint8_t* out_b, size_t size, size_t elem_size) {
  const size_t nbyte = elem_size * size;
  const size_t nbyte_bitrow = nbyte / 8;
  for (size_t ii = 0; ii < nbyte_bitrow; ii++) {
    uint64_t x, t;
    std::memcpy(&x, in + 8 * ii, 8);
    TRANS_BIT_8X8(x, t);
    for (size_t kk = 0; kk < 8; kk++) {
      out_b[kk * nbyte_bitrow + ii] = uint8_t(x);
      x = x >> 8;
    }
  }
}

void bshuf_trans_elem(const uint8_t* in_b, uint8_t* out_b, size_t lda, size_t ldb, size_t elem_size) {
  for (size_t ii = 0; ii < lda; ii++)
    for (size_t jj = 0; jj < ldb; jj++)
      std::memcpy(&out_b[(jj * lda + ii) * elem_size], &in_b[(ii * ldb + jj) * elem_size], elem_size);
}

void bshuf_trans_bit_elem_scal(const uint8_t* in, uint8_t* out, size_t size, size_t elem_size,
                               uint8_t* tmp) {
  bshuf_trans_byte_elem_scal(in, out, size, elem_size);
  bshuf_trans_bit_byte_scal(out, tmp, size, elem_size);
  bshuf_trans_elem(tmp, out, 8, elem_size, size / 8);  // trans_bitrow_eight
}

void bshuf_trans_byte_bitrow_scal(const uint8_t* in_b, uint8_t* out_b, size_t size, size_t elem_size) {
  const size_t nbyte_row = size / 8;
  for (size_t jj = 0; jj < elem_size; jj++)
    for (size_t ii = 0; ii < nbyte_row; ii++)
      for (size_t kk = 0; kk < 8; kk++)
        out_b[ii * 8 * elem_size + jj * 8 + kk] = in_b[(jj * 8 + kk) * nbyte_row + ii];
}

void bshuf_shuffle_bit_eightelem_scal(const uint8_t* in_b, uint8_t* out_b, size_t size, size_t elem_size) {
  const size_t nbyte = elem_size * size;
  for (size_t jj = 0; jj < 8 * elem_size; jj += 8) {
    for (size_t ii = 0; ii + 8 * elem_size - 1 < nbyte; ii += 8 * elem_size) {
      uint64_t x, t;
      std::memcpy(&x, &in_b[ii + jj], 8);
      TRANS_BIT_8X8(x, t);
      for (size_t kk = 0; kk < 8; kk++) {
        out_b[ii + jj / 8 + kk * elem_size] = uint8_t(x);
        x = x >> 8;
      }
    }
  }
}

void bshuf_untrans_bit_elem_scal(const uint8_t* in, uint8_t* out, size_t size, size_t elem_size,
                                 uint8_t* tmp) {
  bshuf_trans_byte_bitrow_scal(in, tmp, size, elem_size);
  bshuf_shuffle_bit_eightelem_scal(tmp, out, size, elem_size);
}

// shuffle.c blosc_internal_bit{,un}shuffle (blosc.c only calls them when blocksize >= typesize).
void blosc_bitshuffle(size_t bytesoftype, size_t blocksize, const uint8_t* src, uint8_t* dest) {
  const size_t size = blocksize / bytesoftype;
  if (size % 8 == 0) {
    std::vector<uint8_t> tmp(blocksize + 8);
    bshuf_trans_bit_elem_scal(src, dest, size, bytesoftype, tmp.data());
    const size_t offset = size * bytesoftype;
    std::memcpy(dest + offset, src + offset, blocksize - offset);
  } else {
    std::memcpy(dest, src, blocksize);
  }
}

void blosc_bitunshuffle(size_t bytesoftype, size_t blocksize, const uint8_t* src, uint8_t* dest) {
  const size_t size = blocksize / bytesoftype;
  if (size % 8 == 0) {
    std::vector<uint8_t> tmp(blocksize + 8);
    bshuf_untrans_bit_elem_scal(src, dest, size, bytesoftype, tmp.data());
    const size_t offset = size * bytesoftype;
    std::memcpy(dest + offset, src + offset, blocksize - offset);
  } else {
    std::memcpy(dest, src, blocksize);
  }
}

// blosc.c blosc_d: which filter runs for a block, then the filter (out of place).
void ref_unshuffle_op(const GpuUnshuffleOp& op, const uint8_t* src, uint8_t* dst) {
  const uint8_t* s = src + op.offset;
  uint8_t* d = dst + op.offset;
  if (op.kind == dd::kByteShuffle && op.typesize > 1) {
    blosc_unshuffle_generic(op.typesize, op.len, s, d);
  } else if (op.kind == dd::kBitShuffle && op.len >= op.typesize) {
    blosc_bitunshuffle(op.typesize, op.len, s, d);
  } else {
    std::memcpy(d, s, op.len);
  }
}

struct UnshuffleCase {
  std::vector<GpuUnshuffleOp> ops;
  std::vector<uint8_t> src;  // the scratch copy (shuffled bytes)
  uint64_t max_len = 0;
};

constexpr uint8_t kArenaPattern = 0x5a;

UnshuffleCase make_unshuffle_case(std::mt19937_64& rng, int n_ops, uint64_t big) {
  static const uint32_t kTypesizes[] = {1, 2, 4, 8, 2, 4, 8, 3, 5, 12, 16};
  UnshuffleCase c;
  uint64_t at = 0;
  for (int i = 0; i < n_ops; ++i) {
    GpuUnshuffleOp op{};
    op.kind = 1 + uint32_t(rng() % 2);
    op.typesize = kTypesizes[rng() % (sizeof kTypesizes / sizeof kTypesizes[0])];
    const uint64_t unit = uint64_t(op.typesize) * 8;
    switch (rng() % 5) {
      case 0: op.len = rng() % 40; break;                                   // tiny, often < typesize
      case 1: op.len = unit * (1 + rng() % (big / unit + 1)); break;        // whole groups
      case 2: op.len = unit * (1 + rng() % 64) + 1 + rng() % (unit - 1); break;  // + leftover
      case 3: op.len = uint64_t(op.typesize) * (1 + rng() % 600); break;   // elems % 8 != 0
      default: op.len = 1 + rng() % big; break;
    }
    at = (at + 15) & ~uint64_t(15);
    if (rng() % 4 == 0) at += 1 + rng() % 15;  // misaligned block: general paths
    op.offset = at;
    at += op.len + rng() % 9;
    c.max_len = std::max(c.max_len, op.len);
    c.ops.push_back(op);
  }
  c.src.resize(at + 16);
  for (auto& b : c.src) b = uint8_t(rng());
  return c;
}

std::vector<uint8_t> ref_unshuffle(const UnshuffleCase& c, uint32_t kind_filter) {
  std::vector<uint8_t> dst(c.src.size(), kArenaPattern);
  for (const auto& op : c.ops) {
    if (kind_filter == 0 || op.kind == kind_filter) ref_unshuffle_op(op, c.src.data(), dst.data());
  }
  return dst;
}

std::vector<uint8_t> emulate_unshuffle(const UnshuffleCase& c, uint32_t kind_filter, uint64_t nw) {
  std::vector<uint8_t> dst(c.src.size(), kArenaPattern);
  for (const auto& op : c.ops) {
    const auto v = view_of<dd::UnshuffleOpView>(op);
    for (uint64_t w = 0; w < nw; ++w) dd::unshuffle_op(v, c.src.data(), dst.data(), kind_filter, w, nw);
  }
  return dst;
}

std::string first_diff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  if (a.size() != b.size()) return "size differs";
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) {
      char msg[96];
      std::snprintf(msg, sizeof msg, "byte %zu: want 0x%02x got 0x%02x", i, a[i], b[i]);
      return msg;
    }
  }
  return {};
}

std::string op_desc(const GpuUnshuffleOp& op) {
  return "kind " + std::to_string(op.kind) + " typesize " + std::to_string(op.typesize) + " len " +
         std::to_string(op.len) + " offset " + std::to_string(op.offset);
}

// ---------------------------------------------------------------------------------------------
// Host suites.

// XXH64 reference values, seed 0, of xxh_buf(n): computed with libxxhash 0.8.1 (XXH64) and
// cross-checked, lower 32 bits, against the Content_Checksum libzstd 1.5 writes into a frame of
// the same bytes (numcodecs.Zstd(checksum=True)); "" and "abc" are xxHash's published values.
struct XxhVector {
  uint64_t len;
  uint64_t hash;
};
constexpr XxhVector kXxhVectors[] = {
    {0, 0xef46db3751d8e999ull},     {1, 0xe934a84adb052768ull},     {3, 0x28823e205e353f69ull},
    {4, 0x91b65bbe720c34cfull},     {5, 0x31fce8da85d2b801ull},     {7, 0xe2400cdea02ee3c5ull},
    {8, 0x521fd2878ea69d17ull},     {9, 0x192535de38f73596ull},     {15, 0x4ee77ab371d06e31ull},
    {16, 0xb1a375c6bd6ba7afull},    {31, 0xb74baa9042b94deeull},    {32, 0x4e13111ced6f735dull},
    {33, 0xf7b9faf20b3bce63ull},    {63, 0x35f935e6044a08adull},    {64, 0xcd91daec2c21766full},
    {65, 0x7c795c59456ed577ull},    {100, 0xd61ea92c5ae13676ull},   {127, 0x181ccdafb569956cull},
    {128, 0x0f9f33b4fe066f05ull},   {1000, 0xb260521730b6d8d9ull},  {4096, 0x04bfc7ca6498362aull},
    {65537, 0xf465528958097a93ull}, {300000, 0x0f709054db2b544cull},
};

/// Byte i = (i * 2654435761 >> 13) & 0xff (the generator of kXxhVectors).
std::vector<uint8_t> xxh_buf(uint64_t n) {
  std::vector<uint8_t> b(n);
  for (uint64_t i = 0; i < n; ++i) b[i] = uint8_t((i * 2654435761ull) >> 13);
  return b;
}

// More lengths, same generator and sources (libxxhash 0.8.1 XXH64 via ctypes, lower 32 bits
// checked against numcodecs.Zstd(checksum=True) frames): around the warp kernel's 4 KiB tile
// and 8 KiB ring, and a 1 MiB + 7 frame.
constexpr XxhVector kXxhMoreVectors[] = {
    {2047, 0x0dd37b878114ac9eull},  {2048, 0xfffc2d88824db985ull}, {4095, 0xd1e78a282e19d354ull},
    {4097, 0xb49d5946976a447full},  {8191, 0x8b6b8b359bf9955aull}, {8192, 0x41f6fc7e5fbc91c8ull},
    {8193, 0x922e4d7809282003ull},  {12345, 0x79ae8df56d600572ull}, {65536, 0xd9df018f076d929dull},
    {1048583, 0x09eb56443d16247dull},
};

/// checksum_kernel's warp form of XXH64 on the host: the same steps (xxh_load_vec ->
/// xxh_ring_put by 32 emulated lanes, xxh_consume_tile by lanes 0..3, xxh_warp_finish), in
/// the kernel's order (tile k stored, then tile k - 1 consumed), over a ring that starts
/// as garbage.
uint64_t emulate_xxh64_warp(const uint8_t* p, uint64_t len, uint64_t garbage) {
  const dd::XxhWarpFrame f = dd::xxh_warp_frame(p, len);
  std::vector<uint64_t> ring(dd::kXxhRingWords);
  for (auto& w : ring) w = garbage = garbage * 6364136223846793005ull + 1442695040888963407ull;
  uint64_t acc[4];
  for (uint32_t j = 0; j < 4; ++j) acc[j] = dd::xxh_acc_init(j);
  for (uint64_t k = 0; k <= f.tiles && f.tiles > 0; ++k) {
    for (uint32_t lane = 0; lane < 32 && k < f.tiles; ++lane) {
      for (int r = 0; r < dd::kXxhLaneVecs; ++r) {
        const uint64_t v = k * dd::kXxhTileVecs + uint64_t(r) * 32 + lane;
        if (v < f.vecs) dd::xxh_ring_put(ring.data(), v, dd::xxh_load_vec(f, v));
      }
    }
    for (uint32_t j = 0; j < 4 && k > 0; ++j) acc[j] = dd::xxh_consume_tile(acc[j], ring.data(), f, j, k - 1);
  }
  return dd::xxh_warp_finish(f, p, len, acc[0], acc[1], acc[2], acc[3]);
}

int host_suites(uint64_t seed, int n_cases) {
  std::mt19937_64 rng(seed);
  Tally fastdiv{"host fastdiv"};
  for (int i = 0; i < 200000; ++i) {
    uint32_t d = uint32_t(rng() >> (rng() % 32));
    if (d == 0) d = 1;
    const uint32_t n = uint32_t(rng() >> (rng() % 32));
    const uint32_t q = dd::fastdiv(n, d, dd::fastdiv_magic(d));
    if (q != n / d) fastdiv.check(false, std::to_string(n) + "/" + std::to_string(d));
  }
  for (uint32_t d : {1u, 2u, 3u, 7u, 0xffffffffu, 0x80000000u, 0x80000001u}) {
    for (uint32_t n : {0u, 1u, d - 1, d, 0xffffffffu, 0xfffffffeu}) {
      fastdiv.check(dd::fastdiv(n, d, dd::fastdiv_magic(d)) == n / d,
                    std::to_string(n) + "/" + std::to_string(d));
    }
  }
  fastdiv.check(true, "");
  fastdiv.report();

  Tally locate{"host locate (fast vs 64-bit)"};
  for (int i = 0; i < 20000; ++i) {
    GpuCopyOp op{};
    for (int d = 0; d < 4; ++d) {
      op.extent[d] = 1 + uint32_t(rng() % (d == 0 ? 5 : 1 + (rng() % 3 == 0 ? 70000 : 40)));
      op.chunk_shape[d] = op.extent[d] + uint32_t(rng() % 3);
    }
    dd::SampleGeom g{};
    for (int d = 0; d < 4; ++d) g.shape[d] = op.extent[d];
    g.sample_voxels = 1;
    dd::AsmPlan p = dd::make_asm_plan(view_of<dd::CopyOpView>(op), g);
    const uint64_t voxels = uint64_t(op.extent[0]) * op.extent[1] * op.extent[2] * op.extent[3];
    if (voxels >> 32) continue;
    const uint64_t local = rng() % voxels;
    dd::AsmPlan wide = p;
    wide.flags |= dd::kPlanWide;
    const dd::AsmCursor a = dd::asm_locate(p, local);
    const dd::AsmCursor b = dd::asm_locate(wide, local);
    bool ok = a.i1 == b.i1 && a.i2 == b.i2 && a.i3 == b.i3 && a.src == b.src && a.dst == b.dst;
    // Stepping from `local` must land where locating `local + kAsmThreads` does.
    if (local + dd::kAsmThreads < voxels) {
      dd::AsmCursor s = a;
      dd::asm_step(p, s);
      const dd::AsmCursor t = dd::asm_locate(p, local + dd::kAsmThreads);
      ok = ok && s.i1 == t.i1 && s.i2 == t.i2 && s.i3 == t.i3 && s.src == t.src && s.dst == t.dst;
    }
    locate.check(ok, "local " + std::to_string(local));
  }
  locate.report();

  Tally casts{"host casts (kernel vs reference)"};
  for (uint32_t code = 0; code < dd::kNumSrcDtypes; ++code) {
    for (int i = 0; i < 20000; ++i) {
      uint64_t raw = rng();
      const uint32_t size = dg::src_dtype_size(code);
      if (i < 64) raw = (uint64_t(1) << (i % 64)) + (i & 1);  // powers of two
      if (is_wide_int(code) && i < 8000) raw = tricky_int(rng, code);
      const float want = ref_to_f32(raw, code);
      const float got = dd::src_to_f32(raw, code);
      const bool same = f32_bits(want) == f32_bits(got) || (std::isnan(want) && std::isnan(got));
      const uint16_t wb = ref_bf16(want);
      const __nv_bfloat16 gb = dd::f32_to_out<__nv_bfloat16>(got);
      uint16_t gbits;
      std::memcpy(&gbits, &gb, 2);
      const bool same_b = wb == gbits || (std::isnan(want) && (gbits & 0x7fff) > 0x7f80);
      if (!same || !same_b) casts.check(false, "code " + std::to_string(code) + " raw " + std::to_string(raw));
    }
  }
  casts.check(true, "");
  casts.report();

  Tally assemble{"host assemble (emulated grid)"};
  for (const AsmCase& c : asm_cases(rng, n_cases)) {
    const std::string err = dg::check_copy_ops(c.ops.data(), c.ops.size(), c.decoded.size(), c.spb, c.shape);
    assemble.check(err.empty(), c.label + ": check_copy_ops: " + err);
    const std::string diff = compare_out(ref_assemble(c), emulate_assemble(c), c.out_dtype);
    assemble.check(diff.empty(), c.label + " (" + std::to_string(c.ops.size()) + " ops): " + diff);
  }
  assemble.report();

  Tally fused{"host assemble + transforms"};
  for (const AsmCase& c : transform_cases(rng, n_cases)) {
    const std::string diff = compare_out(ref_transform(c, ref_assemble(c)), emulate_assemble(c), c.out_dtype);
    fused.check(diff.empty(), c.label + " (" + std::to_string(c.ops.size()) + " ops): " + diff);
  }
  fused.report();

  Tally roundtrip{"host c-blosc port round trip"};
  for (int i = 0; i < 300; ++i) {
    const size_t ts = std::vector<size_t>{1, 2, 3, 4, 8, 16}[rng() % 6];
    const size_t len = rng() % 3 == 0 ? ts * 8 * (1 + rng() % 50) : rng() % 900;
    std::vector<uint8_t> x(len), y(len), z(len);
    for (auto& b : x) b = uint8_t(rng());
    if (ts > 1) {
      blosc_shuffle_generic(ts, len, x.data(), y.data());
      blosc_unshuffle_generic(ts, len, y.data(), z.data());
      roundtrip.check(x == z, "byte ts " + std::to_string(ts) + " len " + std::to_string(len));
    }
    if (len >= ts) {
      blosc_bitshuffle(ts, len, x.data(), y.data());
      blosc_bitunshuffle(ts, len, y.data(), z.data());
      roundtrip.check(x == z, "bit ts " + std::to_string(ts) + " len " + std::to_string(len));
    }
  }
  roundtrip.report();

  Tally unshuffle{"host unshuffle (emulated grid)"};
  for (int i = 0; i < n_cases; ++i) {
    const UnshuffleCase c = make_unshuffle_case(rng, 1 + int(rng() % 24), 3000);
    for (uint32_t filter : {0u, 1u, 2u}) {
      const uint64_t nw = std::vector<uint64_t>{1, 3, 64, 256}[rng() % 4];
      const std::string diff = first_diff(ref_unshuffle(c, filter), emulate_unshuffle(c, filter, nw));
      std::string ops;
      for (const auto& op : c.ops) ops += "\n    " + op_desc(op);
      unshuffle.check(diff.empty(), "filter " + std::to_string(filter) + " nw " + std::to_string(nw) +
                                        ": " + diff + ops);
    }
  }
  unshuffle.report();

  Tally xxh{"host xxh64 (vs libxxhash/libzstd)"};
  for (const XxhVector& v : kXxhVectors) {
    // At offsets 0..8 inside a larger buffer: the aligned and unaligned loads.
    for (uint64_t off = 0; off < 9; ++off) {
      std::vector<uint8_t> b(off, 0xa5);
      const std::vector<uint8_t> x = xxh_buf(v.len);
      b.insert(b.end(), x.begin(), x.end());
      const uint64_t got = dd::xxh64(b.data() + off, v.len);
      xxh.check(got == v.hash, "len " + std::to_string(v.len) + " offset " + std::to_string(off));
    }
  }
  xxh.check(dd::xxh64(reinterpret_cast<const uint8_t*>("abc"), 3) == 0x44bc2cf5ad770999ull, "abc");
  xxh.report();

  // The warp form (emulated) and the one-thread form on more lengths, at offsets 0..16 (all
  // alignments of the 16-byte vectors), the buffer surrounded by other bytes; then random
  // lengths against the one-thread form.
  Tally warp{"host xxh64 warp form (emulated)"};
  auto at_offset = [](uint64_t off, uint64_t len) {
    std::vector<uint8_t> b(off, 0xa5);
    const std::vector<uint8_t> x = xxh_buf(len);
    b.insert(b.end(), x.begin(), x.end());
    b.resize(b.size() + 40, 0xc3);
    return b;
  };
  auto check_vector = [&](const XxhVector& v) {
    for (uint64_t off = 0; off < 17; ++off) {
      const std::vector<uint8_t> b = at_offset(off, v.len);
      const std::string what = "len " + std::to_string(v.len) + " offset " + std::to_string(off);
      warp.check(emulate_xxh64_warp(b.data() + off, v.len, rng()) == v.hash, "warp " + what);
      warp.check(dd::xxh64(b.data() + off, v.len) == v.hash, "one-thread " + what);
    }
  };
  for (const XxhVector& v : kXxhVectors) check_vector(v);
  for (const XxhVector& v : kXxhMoreVectors) check_vector(v);
  for (int i = 0; i < 300; ++i) {
    const uint64_t len = rng() % 4 == 0 ? rng() % 70000 : rng() % 300;
    const uint64_t off = rng() % 64;
    std::vector<uint8_t> b(off + len + 40);
    for (auto& c : b) c = uint8_t(rng());
    warp.check(emulate_xxh64_warp(b.data() + off, len, rng()) == dd::xxh64(b.data() + off, len),
               "random len " + std::to_string(len) + " offset " + std::to_string(off));
  }
  warp.report();

  return fastdiv.fail + locate.fail + casts.fail + assemble.fail + fused.fail + roundtrip.fail + unshuffle.fail + xxh.fail +
         warp.fail;
}

// ---------------------------------------------------------------------------------------------
// Device suites.

#define CK(call)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (call);                                                                  \
    if (e_ != cudaSuccess) {                                                                  \
      std::printf("CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__,  \
                  #call);                                                                     \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

template <class T>
T* to_device(const std::vector<T>& v) {
  T* d = nullptr;
  CK(cudaMalloc(&d, std::max<size_t>(v.size(), 1) * sizeof(T)));
  if (!v.empty()) CK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Runs the checksum check of `ops` over `dec` in `arena` on the device: {mismatches, first
// mismatching op} as the kernel reports them.
std::array<uint32_t, 2> checksum_on_device(const std::vector<damacy::ffi::GpuChecksumOp>& ops, const std::vector<GpuDecodeOp>& dec,
                                           const std::vector<uint8_t>& arena, cudaStream_t stream) {
  GpuDecodeOp* d_dec = to_device(dec);
  auto* d_ops = to_device(ops);
  uint8_t* d_arena = to_device(arena);
  uint32_t* d_res = to_device(std::vector<uint32_t>{0, UINT32_MAX});
  CK(dg::launch_checksum_check(d_ops, ops.size(), d_dec, d_arena, d_res, stream));
  std::array<uint32_t, 2> res{};
  CK(cudaMemcpyAsync(res.data(), d_res, sizeof res, cudaMemcpyDeviceToHost, stream));
  CK(cudaStreamSynchronize(stream));
  CK(cudaFree(d_dec));
  CK(cudaFree(d_ops));
  CK(cudaFree(d_arena));
  CK(cudaFree(d_res));
  return res;
}

std::vector<uint8_t> device_assemble(const AsmCase& c, cudaStream_t stream) {
  const std::vector<uint64_t> prefix = prefix_of(c);
  GpuCopyOp* d_ops = to_device(c.ops);
  uint64_t* d_prefix = to_device(prefix);
  uint8_t* d_dec = to_device(c.decoded);
  uint8_t* d_out = nullptr;
  CK(cudaMalloc(&d_out, c.out_bytes()));
  CK(cudaMemsetAsync(d_out, kOutPattern, c.out_bytes(), stream));
  damacy::ffi::SampleTransform* d_tfs = c.tfs.empty() ? nullptr : to_device(c.tfs);
  bool intensity = false;
  for (const auto& t : c.tfs) intensity = intensity || t.intensity;
  CK(dg::launch_assemble(d_ops, int(c.ops.size()), d_prefix, prefix.back(), d_dec, d_out,
                         c.out_dtype, c.sample_voxels(), c.shape, stream, d_tfs, intensity));
  std::vector<uint8_t> out(c.out_bytes());
  CK(cudaMemcpyAsync(out.data(), d_out, out.size(), cudaMemcpyDeviceToHost, stream));
  CK(cudaStreamSynchronize(stream));
  CK(cudaFree(d_ops));
  CK(cudaFree(d_prefix));
  CK(cudaFree(d_dec));
  CK(cudaFree(d_out));
  if (d_tfs) CK(cudaFree(d_tfs));
  return out;
}

// As compare_out, but values may differ by `rel` relative (+ 1e-5 absolute): the device's
// logf / sincosf against the host's.
std::string compare_close(const std::vector<uint8_t>& want, const std::vector<uint8_t>& got, int out_dtype, float rel) {
  if (want.size() != got.size()) return "size differs";
  const size_t es = out_dtype == 0 ? 4 : 2;
  for (size_t i = 0; i < want.size() / es; ++i) {
    float a, b;
    if (es == 4) {
      std::memcpy(&a, want.data() + i * 4, 4);
      std::memcpy(&b, got.data() + i * 4, 4);
    } else {
      __nv_bfloat16 x, y;
      std::memcpy(&x, want.data() + i * 2, 2);
      std::memcpy(&y, got.data() + i * 2, 2);
      a = __bfloat162float(x);
      b = __bfloat162float(y);
    }
    if (a == b || (std::isnan(a) && std::isnan(b)) || std::fabs(a - b) <= 1e-5f + rel * std::fabs(a)) continue;
    char msg[160];
    std::snprintf(msg, sizeof msg, "element %zu: want %g got %g", i, double(a), double(b));
    return msg;
  }
  return {};
}

std::vector<uint8_t> device_unshuffle(const UnshuffleCase& c, uint32_t filter, cudaStream_t stream,
                                      uint64_t hint) {
  GpuUnshuffleOp* d_ops = to_device(c.ops);
  uint8_t* d_src = to_device(c.src);
  uint8_t* d_dst = nullptr;
  CK(cudaMalloc(&d_dst, c.src.size()));
  CK(cudaMemsetAsync(d_dst, kArenaPattern, c.src.size(), stream));
  const int n = int(c.ops.size());
  if (filter == 0) CK(dg::launch_unshuffle(d_ops, n, d_src, d_dst, stream, hint));
  if (filter == 1) CK(dg::launch_byte_unshuffle(d_ops, n, d_src, d_dst, stream, hint));
  if (filter == 2) CK(dg::launch_bit_unshuffle(d_ops, n, d_src, d_dst, stream, hint));
  std::vector<uint8_t> out(c.src.size());
  CK(cudaMemcpyAsync(out.data(), d_dst, out.size(), cudaMemcpyDeviceToHost, stream));
  CK(cudaStreamSynchronize(stream));
  CK(cudaFree(d_ops));
  CK(cudaFree(d_src));
  CK(cudaFree(d_dst));
  return out;
}

int device_suites(uint64_t seed, int n_cases) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  Tally assemble{"device assemble"};
  for (const AsmCase& c : asm_cases(rng, n_cases)) {
    const std::string diff = compare_out(ref_assemble(c), device_assemble(c, stream), c.out_dtype);
    assemble.check(diff.empty(), c.label + " (" + std::to_string(c.ops.size()) + " ops): " + diff);
  }
  assemble.report();

  Tally fused{"device assemble + transforms"};
  for (const AsmCase& c : transform_cases(rng, n_cases)) {
    const std::vector<uint8_t> want = ref_transform(c, ref_assemble(c));
    const std::vector<uint8_t> got = device_assemble(c, stream);
    const bool noise = c.tfs[0].intensity && c.tfs[0].noise_factor != 0.0f;
    // Geometry and scale/shift bit for bit; noise up to log/sin/cos rounding (and one bf16 step).
    const std::string diff = noise ? compare_close(want, got, c.out_dtype, c.out_dtype == 0 ? 1e-5f : 1e-2f)
                                   : compare_out(want, got, c.out_dtype);
    fused.check(diff.empty(), c.label + " (" + std::to_string(c.ops.size()) + " ops): " + diff);
  }
  fused.report();

  Tally unshuffle{"device unshuffle"};
  for (int i = 0; i < n_cases; ++i) {
    const UnshuffleCase c = make_unshuffle_case(rng, 1 + int(rng() % 40), i % 4 == 0 ? 300000 : 5000);
    for (uint32_t filter : {0u, 1u, 2u}) {
      const uint64_t hint = rng() % 2 ? c.max_len : 0;
      const std::string diff = first_diff(ref_unshuffle(c, filter), device_unshuffle(c, filter, stream, hint));
      unshuffle.check(diff.empty(), "case " + std::to_string(i) + " filter " + std::to_string(filter) + ": " + diff);
    }
  }
  unshuffle.report();

  Tally copy{"device decode copy"};
  for (int i = 0; i < 20; ++i) {
    std::vector<GpuDecodeOp> ops;
    std::vector<uint8_t> staging(1 << 16);
    for (auto& b : staging) b = uint8_t(rng());
    uint64_t at = 0;
    for (int k = 0; k < 1 + int(rng() % 30); ++k) {
      GpuDecodeOp op{};
      op.codec = rng() % 3 == 0 ? 1 : 0;
      op.src_len = op.dst_len = rng() % 3000;
      op.src_offset = rng() % (staging.size() - op.src_len);
      op.dst_offset = at + (rng() % 2 ? 0 : rng() % 16);
      at = op.dst_offset + op.dst_len;
      ops.push_back(op);
    }
    std::vector<uint8_t> want(at + 1, kArenaPattern);
    for (const auto& op : ops) {
      if (op.codec == 0) std::memcpy(want.data() + op.dst_offset, staging.data() + op.src_offset, op.src_len);
    }
    copy.check(dg::check_decode_ops(ops.data(), ops.size(), staging.size(), want.size()).empty(), "check");
    GpuDecodeOp* d_ops = to_device(ops);
    uint8_t* d_staging = to_device(staging);
    uint8_t* d_arena = nullptr;
    CK(cudaMalloc(&d_arena, want.size()));
    CK(cudaMemsetAsync(d_arena, kArenaPattern, want.size(), stream));
    CK(dg::launch_decode_copy(d_ops, int(ops.size()), d_staging, d_arena, stream));
    std::vector<uint8_t> got(want.size());
    CK(cudaMemcpyAsync(got.data(), d_arena, got.size(), cudaMemcpyDeviceToHost, stream));
    CK(cudaStreamSynchronize(stream));
    copy.check(first_diff(want, got).empty(), "case " + std::to_string(i) + ": " + first_diff(want, got));
    CK(cudaFree(d_ops));
    CK(cudaFree(d_staging));
    CK(cudaFree(d_arena));
  }
  copy.report();

  Tally status{"device decode status check"};
  for (int i = 0; i < 10; ++i) {
    const size_t n = 1 + rng() % 5000;
    std::vector<int32_t> st(n, 0);
    std::vector<size_t> actual(n), expected(n);
    uint32_t bad = 0, first = UINT32_MAX;
    for (size_t k = 0; k < n; ++k) {
      expected[k] = actual[k] = rng() % 100000;
      const int r = int(rng() % 50);
      if (r == 0) st[k] = 12;
      if (r == 1) actual[k] += 1;
      if (r <= 1) {
        ++bad;
        first = std::min<uint32_t>(first, uint32_t(k));
      }
    }
    int32_t* d_st = to_device(st);
    size_t* d_actual = to_device(actual);
    size_t* d_expected = to_device(expected);
    uint32_t* d_res = to_device(std::vector<uint32_t>{0, UINT32_MAX});
    CK(dg::launch_decode_status_check(d_st, d_actual, d_expected, n, d_res, stream));
    uint32_t res[2];
    CK(cudaMemcpyAsync(res, d_res, sizeof res, cudaMemcpyDeviceToHost, stream));
    CK(cudaStreamSynchronize(stream));
    status.check(res[0] == bad && res[1] == first, "n " + std::to_string(n));
    CK(cudaFree(d_st));
    CK(cudaFree(d_actual));
    CK(cudaFree(d_expected));
    CK(cudaFree(d_res));
  }
  status.report();

  // Checksum check: decode ops over an arena holding the reference buffers at assorted
  // (unaligned too) offsets; some expectations corrupted. Device results equal the vectors.
  Tally sums{"device zstd checksum check"};
  for (int i = 0; i < 10; ++i) {
    std::vector<GpuDecodeOp> dec;
    std::vector<damacy::ffi::GpuChecksumOp> ops;
    std::vector<uint8_t> arena;
    uint32_t bad = 0, first = UINT32_MAX;
    const size_t n = 1 + rng() % 200;
    for (size_t k = 0; k < n; ++k) {
      const XxhVector& v = kXxhVectors[rng() % std::size(kXxhVectors)];
      arena.resize(arena.size() + rng() % 9, 0x5a);
      GpuDecodeOp d{};
      d.codec = rng() % 4 == 0 ? 0 : 1;  // copy ops in between, never checksummed
      d.dst_offset = arena.size();
      d.dst_len = d.src_len = v.len;
      const std::vector<uint8_t> x = xxh_buf(v.len);
      arena.insert(arena.end(), x.begin(), x.end());
      dec.push_back(d);
      if (d.codec != 1) continue;
      uint32_t expected = uint32_t(v.hash);
      if (rng() % 7 == 0) {
        expected ^= 1u << (rng() % 32);
        ++bad;
        first = std::min<uint32_t>(first, uint32_t(ops.size()));
      }
      ops.push_back({uint32_t(dec.size() - 1), expected});
    }
    arena.push_back(0);
    sums.check(dg::check_checksum_ops(ops.data(), ops.size(), dec.data(), dec.size()).empty(), "check");
    const auto res = checksum_on_device(ops, dec, arena, stream);
    sums.check(res[0] == bad && res[1] == first,
               "case " + std::to_string(i) + ": " + std::to_string(res[0]) + " mismatches (want " +
                   std::to_string(bad) + "), first " + std::to_string(res[1]) + " (want " + std::to_string(first) + ")");
  }
  {
    // check_checksum_ops refuses an op naming a copy op or none.
    std::vector<GpuDecodeOp> dec(2);
    dec[1].codec = 1;
    const damacy::ffi::GpuChecksumOp copy_op{0, 0}, past{2, 0}, ok{1, 0};
    sums.check(!dg::check_checksum_ops(&copy_op, 1, dec.data(), 2).empty(), "names a copy op");
    sums.check(!dg::check_checksum_ops(&past, 1, dec.data(), 2).empty(), "names op 2 of 2");
    sums.check(dg::check_checksum_ops(&ok, 1, dec.data(), 2).empty(), "names the zstd op");
  }
  sums.report();

  // Many frames in one launch (more ops than resident warps, so warps loop), of the odd
  // lengths (0, 1, 31, 32, 33, the tile edges, 1 MiB + 7) at every alignment against the
  // libxxhash vectors, and of random lengths over random bytes against the one-thread form
  // (checked against the vectors by the host suites); the last frame ends at the arena's
  // last byte. Some expectations corrupted.
  Tally many{"device zstd checksum many frames"};
  for (int round = 0; round < 3; ++round) {
    std::vector<GpuDecodeOp> dec;
    std::vector<damacy::ffi::GpuChecksumOp> ops;
    std::vector<uint8_t> arena;
    uint32_t bad = 0, first = UINT32_MAX;
    auto add = [&](const std::vector<uint8_t>& bytes, uint64_t hash) {
      GpuDecodeOp d{};
      d.codec = 1;
      d.dst_offset = arena.size();
      d.dst_len = d.src_len = bytes.size();
      arena.insert(arena.end(), bytes.begin(), bytes.end());
      dec.push_back(d);
      uint32_t expected = uint32_t(hash);
      if (rng() % 9 == 0) {
        expected ^= 1u << (rng() % 32);
        ++bad;
        first = std::min<uint32_t>(first, uint32_t(ops.size()));
      }
      ops.push_back({uint32_t(dec.size() - 1), expected});
    };
    if (round == 0) {
      for (uint64_t off = 0; off < 17; ++off) {
        for (const XxhVector& v : {kXxhVectors[0], kXxhVectors[1], kXxhVectors[10], kXxhVectors[11], kXxhVectors[12],
                                   kXxhMoreVectors[2], kXxhVectors[20], kXxhMoreVectors[3], kXxhMoreVectors[6],
                                   kXxhMoreVectors[9]}) {
          arena.resize((arena.size() / 16) * 16 + 16 + off, 0x5a);
          add(xxh_buf(v.len), v.hash);
        }
      }
    } else {
      // Round 2: more ops than the launch has warps (launch_checksum_check caps the grid),
      // so each warp hashes several frames in turn.
      const size_t n = size_t(std::max(n_cases, 1)) * (round == 1 ? 150 : 1000);  // 6,000 / 40,000 by default
      for (size_t k = 0; k < n; ++k) {
        const uint64_t r = rng() % 100;
        const uint64_t len = round == 2 ? (r < 80 ? rng() % 300 : rng() % 4000)
                                        : (r < 60 ? rng() % 300 : r < 97 ? rng() % 20000 : rng() % 300000);
        arena.resize(arena.size() + rng() % 40, 0x5a);
        std::vector<uint8_t> x(len);
        for (size_t c = 0; c < len; c += 8) {
          const uint64_t w = rng();
          std::memcpy(x.data() + c, &w, std::min<size_t>(8, len - c));
        }
        add(x, dd::xxh64(x.data(), len));
      }
    }
    {
      const std::vector<uint8_t> x = xxh_buf(kXxhMoreVectors[9].len);  // 1 MiB + 7, unaligned, last
      arena.resize((arena.size() / 16) * 16 + 16 + 3, 0x5a);
      add(x, kXxhMoreVectors[9].hash);
    }
    many.check(dg::check_checksum_ops(ops.data(), ops.size(), dec.data(), dec.size()).empty(), "check");
    const auto res = checksum_on_device(ops, dec, arena, stream);
    many.check(res[0] == bad && res[1] == first,
               "round " + std::to_string(round) + " (" + std::to_string(ops.size()) + " frames): " +
                   std::to_string(res[0]) + " mismatches (want " + std::to_string(bad) + "), first " +
                   std::to_string(res[1]) + " (want " + std::to_string(first) + ")");
  }
  many.report();

  CK(cudaStreamDestroy(stream));
  return assemble.fail + fused.fail + unshuffle.fail + copy.fail + status.fail + sums.fail + many.fail;
}

// ---------------------------------------------------------------------------------------------
// Benchmark: random 64x128x128 crops of an array of 64^3 uint16 chunks (18 chunks per crop,
// all distinct, as the decoded arena of a batch would hold them), f32 and bf16 out; unshuffle
// of 512 KiB chunks split in 64 KiB blosc blocks (typesize 2).

float time_ms(cudaStream_t s, int reps, const std::function<void()>& f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  f();  // warm-up
  CK(cudaEventRecord(a, s));
  for (int i = 0; i < reps; ++i) f();
  CK(cudaEventRecord(b, s));
  CK(cudaEventSynchronize(b));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, a, b));
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return ms / reps;
}

void bench(uint64_t seed) {
  std::mt19937_64 rng(seed);
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("bench on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);

  const uint32_t spb = 32, C = 64;
  const uint32_t crop[3] = {64, 128, 128};
  std::vector<GpuCopyOp> ops;
  uint64_t arena = 0;
  for (uint32_t smp = 0; smp < spb; ++smp) {
    uint32_t off[3];
    for (int d = 0; d < 3; ++d) off[d] = 1 + uint32_t(rng() % (C - 1));  // unaligned crop start
    // chunk-grid cells the crop [off, off + crop) touches
    for (uint32_t a = off[0] / C; a * C < off[0] + crop[0]; ++a)
      for (uint32_t b = off[1] / C; b * C < off[1] + crop[1]; ++b)
        for (uint32_t c = off[2] / C; c * C < off[2] + crop[2]; ++c) {
          const uint32_t cell[3] = {a, b, c};
          GpuCopyOp op{};
          op.src_dtype = dd::kU16;
          op.sample = smp;
          op.chunk_offset = arena;
          arena += uint64_t(C) * C * C * 2;
          op.chunk_shape[0] = op.extent[0] = 1;
          for (int d = 0; d < 3; ++d) {
            const uint32_t lo = std::max(off[d], cell[d] * C);
            const uint32_t hi = std::min(off[d] + crop[d], cell[d] * C + C);
            op.chunk_shape[d + 1] = C;
            op.chunk_start[d + 1] = lo - cell[d] * C;
            op.sample_start[d + 1] = lo - off[d];
            op.extent[d + 1] = hi - lo;
          }
          ops.push_back(op);
        }
  }
  const uint32_t shape[4] = {1, crop[0], crop[1], crop[2]};
  std::vector<uint64_t> prefix(ops.size() + 1);
  const uint64_t total = dg::copy_op_voxel_prefix(ops.data(), ops.size(), prefix.data());
  GpuCopyOp* d_ops = to_device(ops);
  uint64_t* d_prefix = to_device(prefix);
  uint8_t* d_dec = nullptr;
  void* d_out = nullptr;
  CK(cudaMalloc(&d_dec, arena));
  CK(cudaMemset(d_dec, 1, arena));
  CK(cudaMalloc(&d_out, total * 4));
  const uint64_t sv = uint64_t(crop[0]) * crop[1] * crop[2];
  for (int od = 0; od < 2; ++od) {
    const float ms = time_ms(s, 20, [&] {
      CK(dg::launch_assemble(d_ops, int(ops.size()), d_prefix, total, d_dec, d_out, od, sv, shape, s));
    });
    const double bytes = double(total) * (2 + (od == 0 ? 4 : 2));
    std::printf("assemble u16 -> %s: %zu ops, %.1f Mvoxels, %.3f ms, %.0f Gvoxel/s, %.0f GB/s (read+write)\n",
                od == 0 ? "f32" : "bf16", ops.size(), total / 1e6, ms, total / ms / 1e6, bytes / ms / 1e6);
  }
  const float copy_ms = time_ms(s, 20, [&] {
    CK(cudaMemcpyAsync(d_out, d_dec, total * 3, cudaMemcpyDeviceToDevice, s));
  });
  std::printf("reference cudaMemcpy D2D of %.0f MB: %.3f ms, %.0f GB/s (read+write)\n", total * 3 / 1e6,
              copy_ms, 2.0 * total * 3 / copy_ms / 1e6);

  // Unshuffle: the arena as 64 KiB blocks.
  const uint64_t block = 64 << 10;
  const uint64_t nblocks = std::min<uint64_t>(arena / block, 16384);
  for (uint32_t kind : {1u, 2u}) {
    std::vector<GpuUnshuffleOp> uops(nblocks);
    for (uint64_t i = 0; i < nblocks; ++i) uops[i] = GpuUnshuffleOp{i * block, block, 2, kind};
    GpuUnshuffleOp* d_uops = to_device(uops);
    uint8_t* d_scratch = nullptr;
    CK(cudaMalloc(&d_scratch, nblocks * block));
    const float ms = time_ms(s, 20, [&] {
      CK(dg::launch_unshuffle(d_uops, int(nblocks), d_scratch, d_dec, s, block));
    });
    std::printf("%s unshuffle typesize 2: %" PRIu64 " x 64 KiB, %.3f ms, %.0f GB/s (read+write)\n",
                kind == 1 ? "byte" : "bit", nblocks, ms, 2.0 * nblocks * block / ms / 1e6);
    CK(cudaFree(d_uops));
    CK(cudaFree(d_scratch));
  }
  // zstd content checksums: the arena as frames of 64 KiB and of 512 KiB (a 64^3 u16 chunk),
  // 16-byte aligned, and as frames 16 bytes shorter starting 5 bytes in (the unaligned path).
  // The arena is all 1s: every frame has the hash of its length of 1s, so the timed launch
  // also checks (mismatches must be 0).
  CK(cudaMemset(d_dec, 1, arena));  // the unshuffle timings above wrote into it
  for (const uint64_t frame : {uint64_t(64) << 10, uint64_t(512) << 10}) {
    for (const bool unaligned : {false, true}) {
      const uint64_t nframes = arena / frame;
      const uint64_t len = unaligned ? frame - 16 : frame;
      const uint32_t want = uint32_t(dd::xxh64(std::vector<uint8_t>(len, 1).data(), len));
      std::vector<GpuDecodeOp> dec(nframes);
      std::vector<damacy::ffi::GpuChecksumOp> sums(nframes);
      for (uint64_t i = 0; i < nframes; ++i) {
        dec[i].codec = 1;
        dec[i].dst_offset = i * frame + (unaligned ? 5 : 0);
        dec[i].dst_len = dec[i].src_len = len;
        sums[i] = {uint32_t(i), want};
      }
      GpuDecodeOp* d_dops = to_device(dec);
      auto* d_sums = to_device(sums);
      uint32_t* d_res = to_device(std::vector<uint32_t>{0, UINT32_MAX});
      const float ms = time_ms(s, 10, [&] {
        CK(dg::launch_checksum_check(d_sums, nframes, d_dops, d_dec, d_res, s));
      });
      uint32_t res[2];
      CK(cudaMemcpy(res, d_res, sizeof res, cudaMemcpyDeviceToHost));
      std::printf("zstd checksum (XXH64): %" PRIu64 " frames x %" PRIu64 " KiB%s, %.3f ms, %.1f GB/s total, %.2f GB/s per frame, %u mismatches (want 0)\n",
                  nframes, frame >> 10, unaligned ? " - 16 B at +5" : "", ms, double(nframes * len) / ms / 1e6,
                  double(len) / ms / 1e6, res[0]);
      CK(cudaFree(d_dops));
      CK(cudaFree(d_sums));
      CK(cudaFree(d_res));
    }
  }
  CK(cudaFree(d_ops));
  CK(cudaFree(d_prefix));
  CK(cudaFree(d_dec));
  CK(cudaFree(d_out));
  CK(cudaStreamDestroy(s));
}

}  // namespace

// augment_test.cu: the fused augmentation kernel.
int augment_host_suite(uint64_t seed, int n_cases);
int augment_device_suite(uint64_t seed, int n_cases);
void augment_bench();

int main(int argc, char** argv) {
  uint64_t seed = 12345;
  int n_cases = 40;
  bool do_bench = false, host_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--cases" && i + 1 < argc) n_cases = std::atoi(argv[++i]);
    else if (a == "--bench") do_bench = true;
    else if (a == "--host-only") host_only = true;
    else {
      std::printf("usage: %s [--seed N] [--cases N] [--bench] [--host-only]\n", argv[0]);
      return 2;
    }
  }
  std::printf("seed %" PRIu64 ", %d random cases per suite\n", seed, n_cases);
  int fails = host_suites(seed, n_cases) + augment_host_suite(seed, n_cases);
  int devices = 0;
  const cudaError_t e = host_only ? cudaErrorNoDevice : cudaGetDeviceCount(&devices);
  if (e != cudaSuccess || devices == 0) {
    std::printf("SKIP: no CUDA device (%s)\n", host_only ? "--host-only" : cudaGetErrorName(e));
  } else {
    fails += device_suites(seed, n_cases) + augment_device_suite(seed, n_cases);
    if (do_bench) {
      bench(seed);
      augment_bench();
    }
  }
  std::printf("%s\n", fails ? "FAIL" : "PASS");
  return fails ? 1 : 0;
}
