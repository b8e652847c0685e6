// damacy from C++: stream batches of seeded random crops of a Zarr array and print a checksum
// line per batch. Uses only the installed package (damacy::damacy) and libtorch, no Python.
//
//   damacy_downstream <array.zarr> [n_batches=4] [seed=7]
//
// Writes an example array at <array.zarr> first when it has no zarr.json (uint16, shape
// kShape, zstd, sharded). Output, one line each (tests/test_downstream.py parses it):
//   array <uri> shape <d0> <d1> <d2>
//   sample <batch> <i> <start0> <stop0> <start1> <stop1> <start2> <stop2>
//   batch <batch> sum <sum of the values, as double> crc32 <CRC-32 of the tensor's bytes, hex>
//   stats <pipeline stats JSON>
// Boxes: start_d = splitmix64() % (shape_d - sample_d + 1) per sample and dimension, in order,
// from one splitmix64 stream seeded with <seed>.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <damacy/damacy.h>

namespace {

const std::vector<std::uint64_t> kShape = {64, 96, 96};
const std::vector<std::uint64_t> kChunk = {16, 32, 32};
const std::vector<std::uint64_t> kShard = {32, 64, 64};
const std::vector<std::int64_t> kSampleShape = {16, 32, 32};
constexpr int kSamplesPerBatch = 4;

struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// CRC-32 (IEEE, as zlib.crc32), bitwise: checksums, not speed.
std::uint32_t crc32(const unsigned char* p, std::size_t n) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

bool exists(const std::string& path) { return std::ifstream(path).good(); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s <array.zarr> [n_batches=4] [seed=7]\n", argv[0]);
    return 2;
  }
  const std::string uri = argv[1];
  const int n_batches = argc > 2 ? std::atoi(argv[2]) : 4;
  const std::uint64_t seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 7;

  try {
    if (!exists(uri + "/zarr.json")) {
      damacy::write_example_volume(uri, kShape, kChunk, kShard, "zstd", /*seed=*/0);
    }
    const std::vector<std::uint64_t> shape = damacy::array_info(uri).shape;
    if (shape.size() != kSampleShape.size()) {
      std::fprintf(stderr, "%s: expected a %zu-d array\n", uri.c_str(), kSampleShape.size());
      return 1;
    }
    std::printf("array %s shape %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", uri.c_str(), shape[0],
                shape[1], shape[2]);

    damacy::Pipeline pipe(damacy::Config::from_json(
        R"({"samples_per_batch": 4, "sample_shape": [16, 32, 32], "n_io_threads": 2})"));

    // An endless generator of seeded boxes; `pushed` remembers them to check each batch's
    // samples (its metadata) against what was asked for.
    SplitMix64 rng{seed};
    std::deque<damacy::Sample> pushed;
    damacy::SampleGenerator boxes([&]() -> std::optional<damacy::Sample> {
      damacy::Sample s{uri, {}};
      for (std::size_t d = 0; d < shape.size(); ++d) {
        const auto span = static_cast<std::uint64_t>(shape[d] - kSampleShape[d] + 1);
        const auto start = static_cast<std::int64_t>(rng.next() % span);
        s.aabb.emplace_back(start, start + kSampleShape[d]);
      }
      pushed.push_back(s);
      return s;
    });

    for (int b = 0; b < n_batches; ++b) {
      pipe.push(boxes);  // tops up the lookahead window; the rest stays in the generator
      const damacy::Batch batch = pipe.pop_batch();
      const at::Tensor& t = batch.tensor;
      if (t.scalar_type() != at::kFloat || !t.is_contiguous() || !t.device().is_cpu() ||
          t.size(0) != kSamplesPerBatch || batch.samples.size() != kSamplesPerBatch) {
        std::fprintf(stderr, "batch %d: unexpected tensor or samples\n", b);
        return 1;
      }
      for (int i = 0; i < kSamplesPerBatch; ++i) {
        const damacy::Sample& s = batch.samples[i];
        if (s != pushed.front()) {
          std::fprintf(stderr, "batch %d sample %d: not the sample pushed\n", b, i);
          return 1;
        }
        pushed.pop_front();
        std::printf("sample %d %d", b, i);
        for (const auto& [start, stop] : s.aabb) std::printf(" %" PRId64 " %" PRId64, start, stop);
        std::printf("\n");
      }
      const float* v = t.data_ptr<float>();
      double sum = 0.0;
      for (std::int64_t k = 0; k < t.numel(); ++k) sum += v[k];
      const auto crc = crc32(static_cast<const unsigned char*>(t.data_ptr()), t.nbytes());
      std::printf("batch %d sum %.17g crc32 %08x\n", b, sum, crc);
    }
    std::printf("stats %s\n", pipe.stats().c_str());
    pipe.close();
  } catch (const damacy::Error& e) {
    // e.status() says which (damacy::Status); what() is "[Token] message".
    std::fprintf(stderr, "damacy error: %s\n", e.what());
    return 1;
  }
  return 0;
}
