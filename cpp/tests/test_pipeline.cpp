// Tests of the C++ API over real arrays: push (one, range, iterator pair, generator), pop and
// pop_batch, and one test per status a caller can meet, each through the public API only.
//
// Fixtures are written per case into a fresh temporary folder by damacy::write_example_volume
// (uint16, synthetic values that depend only on shape and seed), then broken by hand:
//   good:      shape=[16,16,16], inner=[8,8,8], shard=[16,16,16], zstd: 8 chunks in 1 shard
//   unsharded: shape=[16,16,16], chunk=[8,8,8], blosc-zstd: 8 chunks (same values as good)
//   truncated: `good` with its shard file cut in half (the index at its end is gone)
//   corrupt:   shape=[16,16,16], chunk=[8,8,8], zstd, chunk c/0/0/0 overwritten with noise
//   complex64: a hand-written zarr.json with data_type complex64 and no chunks
// Errors about a sample surface at the pop of its batch, never at push; after a failed batch
// the next batch pops with the right values (the pipeline stays usable).
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include "damacy/damacy.h"
#include "harness.h"

namespace {

using Box = std::vector<std::pair<std::int64_t, std::int64_t>>;

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// A fresh folder, removed with everything in it when the test ends.
// POSIX, not std::filesystem: the PyPI libtorch.so exports its own copy of std::filesystem
// symbols, which interpose on libstdc++'s and crash (remove_all calls a null pointer).
struct TempDir {
  std::string path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/damacy-cpp-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() {
    nftw(
        path.c_str(),
        [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
        FTW_DEPTH | FTW_PHYS);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

const std::vector<std::uint64_t> kShape = {16, 16, 16};
const std::vector<std::uint64_t> kChunk = {8, 8, 8};
constexpr std::uint64_t kSeed = 11;

std::string write_good(const TempDir& dir, const std::string& name = "good.zarr") {
  const std::string uri = dir / name;
  damacy::write_example_volume(uri, kShape, kChunk, {16, 16, 16}, "zstd", kSeed);
  return uri;
}

std::string write_unsharded(const TempDir& dir, const std::string& name, std::string_view codec) {
  const std::string uri = dir / name;
  damacy::write_example_volume(uri, kShape, kChunk, {}, codec, kSeed);
  return uri;
}

std::string read_file(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("writing " + p + " failed");
}

// Config for `spb` samples of 4^3 (extra: more JSON fields, starting with ", ").
std::string cfg(int spb, const std::string& extra = "") {
  return R"({"samples_per_batch": )" + std::to_string(spb) +
         R"(, "sample_shape": [4, 4, 4], "n_io_threads": 2, "pop_timeout_s": 20)" + extra + "}";
}

Box box(std::int64_t z, std::int64_t y, std::int64_t x, std::int64_t n = 4) {
  return {{z, z + n}, {y, y + n}, {x, x + n}};
}

// Distinct in-bounds boxes of 4^3 on a 16^3 array.
std::vector<Box> boxes(std::size_t n, std::uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> start(0, 12);
  std::vector<Box> out;
  for (std::size_t i = 0; i < n; ++i) out.push_back(box(start(rng), start(rng), start(rng)));
  return out;
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.scalar_type() == b.scalar_type() && a.is_contiguous() &&
         b.is_contiguous() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

// The crops of `bs` read alone, in one batch of a fresh pipeline.
at::Tensor read(const std::string& uri, const std::vector<Box>& bs) {
  damacy::Pipeline p(cfg(static_cast<int>(bs.size())));
  for (const Box& b : bs) CHECK(p.push({uri, b}));
  return p.pop();
}

double sum(const at::Tensor& t) {
  const float* v = t.data_ptr<float>();
  double s = 0;
  for (std::int64_t i = 0; i < t.numel(); ++i) s += v[i];
  return s;
}

// Batch 1 = {good, bad}, batch 2 = {good, good}: pop throws Exc (checked by `then`), the next
// pop is batch 2 with the right values, close returns.
template <class Exc, class Then>
void fails_then_recovers(const std::string& good_uri, const damacy::Sample& bad, Then then,
                         const std::string& config = cfg(2)) {
  const auto g = boxes(3, 5);
  damacy::Pipeline p(config);
  CHECK(p.push({good_uri, g[0]}));
  CHECK(p.push(bad));  // accepted: problems with a sample surface at pop
  CHECK(p.push({good_uri, g[1]}));
  CHECK(p.push({good_uri, g[2]}));
  CHECK_THROWS(Exc, p.pop(), then(e));
  const damacy::Batch next = p.pop_batch();
  CHECK(next.samples.size() == 2);
  CHECK(next.samples[0] == (damacy::Sample{good_uri, g[1]}));
  CHECK(same_bytes(next.tensor, read(good_uri, {g[1], g[2]})));
  p.close();
}

}  // namespace

// ------------------------------------------------------------------------------- values, push

TEST(pipeline_values_equal_across_layouts) {
  TempDir dir;
  const std::string sharded = write_good(dir);
  const std::string plain = write_unsharded(dir, "plain.zarr", "blosc-zstd");
  const auto bs = boxes(4, 2);
  const at::Tensor a = read(sharded, bs);
  const at::Tensor b = read(plain, bs);
  CHECK(a.sizes() == (std::vector<std::int64_t>{4, 4, 4, 4}));
  CHECK(a.scalar_type() == at::kFloat);
  CHECK(a.device().is_cpu());
  CHECK(sum(a) > 0);
  CHECK(same_bytes(a, b));
  // Each sample of a batch is the crop read alone.
  for (std::size_t i = 0; i < bs.size(); ++i) {
    const at::Tensor one = read(sharded, {bs[i]});
    CHECK(std::memcmp(one.data_ptr(), static_cast<const char*>(a.data_ptr()) + i * one.nbytes(),
                      one.nbytes()) == 0);
  }
}

TEST(pipeline_push_range_stops_at_full_window) {
  TempDir dir;
  const std::string uri = write_good(dir);
  std::vector<damacy::Sample> samples;
  for (const Box& b : boxes(10, 3)) samples.push_back({uri, b});
  damacy::Pipeline p(cfg(2, R"(, "lookahead_samples": 4)"));
  CHECK_EQ(p.window_room(), 4u);
  CHECK_EQ(p.push(samples), std::size_t{4});  // the window holds 4
  CHECK_EQ(p.pending_samples(), 4u);
  CHECK_EQ(p.window_room(), 0u);
  CHECK(p.push(samples.begin() + 4, samples.end()) == samples.begin() + 4);  // still full
  std::size_t next = 4;
  for (int b = 0; b < 5; ++b) {
    const damacy::Batch batch = p.pop_batch();
    CHECK(batch.samples == (std::vector<damacy::Sample>{samples[2 * b], samples[2 * b + 1]}));
    CHECK(same_bytes(batch.tensor, read(uri, {samples[2 * b].aabb, samples[2 * b + 1].aabb})));
    CHECK_EQ(p.window_room(), 4 - (next - 2 * (static_cast<std::size_t>(b) + 1)));  // pop freed 2
    next = static_cast<std::size_t>(p.push(samples.begin() + next, samples.end()) - samples.begin());
  }
  CHECK_EQ(next, samples.size());
  CHECK_EQ(p.pending_samples(), 0u);
  CHECK_THROWS(damacy::TryAgain, p.pop(0.05), (void)e);
}

TEST(pipeline_sample_generator_feeds_lazily_in_order) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const auto bs = boxes(7, 4);
  std::size_t pulled = 0;
  damacy::SampleGenerator gen([&]() -> std::optional<damacy::Sample> {
    if (pulled == bs.size()) return std::nullopt;
    return damacy::Sample{uri, bs[pulled++]};
  });
  damacy::Pipeline p(cfg(2, R"(, "lookahead_samples": 4)"));
  CHECK_EQ(p.push(gen), std::size_t{4});
  CHECK_EQ(pulled, std::size_t{5});  // the fifth was refused and is held, not lost
  CHECK(!gen.exhausted());
  for (std::size_t b = 0; b < 3; ++b) {
    const damacy::Batch batch = p.pop_batch();
    CHECK(batch.samples[0] == (damacy::Sample{uri, bs[2 * b]}));
    CHECK(batch.samples[1] == (damacy::Sample{uri, bs[2 * b + 1]}));
    p.push(gen);
  }
  CHECK(gen.exhausted());
  CHECK_EQ(p.pending_samples(), 1u);  // 7 samples: a partial batch stays pending
  CHECK_THROWS(damacy::TryAgain, p.pop(0.05), (void)e);
}

TEST(pop_batch_samples_round_trip_unusual_uris) {
  TempDir dir;
  // A quote, a backslash, a non-ASCII letter and a space survive the samples' trip.
  const std::string uri = write_good(dir, "we\"ird\\ n\xC3\xBCme.zarr");
  damacy::Pipeline p(cfg(2));
  const auto bs = boxes(2, 6);
  const std::vector<damacy::Sample> pushed = {{uri, bs[0]}, {uri, bs[1]}};
  CHECK_EQ(p.push(pushed), std::size_t{2});
  const damacy::Batch b = p.pop_batch();
  CHECK(b.samples == pushed);
  CHECK_EQ(b.samples[0].uri, uri);
}

TEST(pipeline_destructor_closes_with_work_in_flight) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const auto t0 = std::chrono::steady_clock::now();
  {
    damacy::Pipeline p(cfg(2));
    for (const Box& b : boxes(8, 7)) p.push({uri, b});
  }  // RAII: closes here, batches in flight or not
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}

// ----------------------------------------------------------------------- one test per status

TEST(error_invalid_argument_box_extent_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  fails_then_recovers<damacy::InvalidArgument>(uri, {uri, box(0, 0, 0, 5)}, [](const auto& e) {
    CHECK(e.status() == damacy::Status::InvalidArgument);
    CHECK(contains(e.message(), "sample_shape"));
  });
}

TEST(error_invalid_argument_box_outside_the_array_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  fails_then_recovers<damacy::InvalidArgument>(uri, {uri, box(14, 0, 0)}, [](const auto& e) {
    CHECK(contains(e.message(), "16"));  // names the array's shape
  });
}

TEST(error_not_found_array_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const std::string missing = dir / "missing.zarr";
  fails_then_recovers<damacy::NotFound>(uri, {missing, box(0, 0, 0)}, [&](const auto& e) {
    CHECK(e.status() == damacy::Status::NotFound);
    CHECK(contains(e.message(), "missing.zarr"));
  });
}

TEST(error_rank_mismatch_at_pop) {
  TempDir dir;
  const std::string uri3 = write_good(dir);
  const std::string uri2 = dir / "plane.zarr";
  damacy::write_example_volume(uri2, {16, 16}, {8, 8}, {}, "zstd", kSeed);
  // sample_shape [4, 4]: the 2-d box is fine on the 2-d array, a rank mismatch on the 3-d one.
  damacy::Pipeline p(R"({"samples_per_batch": 2, "sample_shape": [4, 4], "n_io_threads": 2})");
  const Box b2 = {{0, 4}, {4, 8}};
  CHECK(p.push({uri2, b2}));
  CHECK(p.push({uri3, b2}));
  CHECK(p.push({uri2, b2}));
  CHECK(p.push({uri2, b2}));
  CHECK_THROWS(damacy::RankMismatch, p.pop(), {
    CHECK(e.status() == damacy::Status::RankMismatch);
    CHECK(contains(e.message(), "good.zarr"));
  });
  const at::Tensor next = p.pop();
  CHECK(next.sizes() == (std::vector<std::int64_t>{2, 4, 4}));
  CHECK(sum(next) > 0);
}

TEST(error_dtype_mismatch_complex64_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const std::string bad = dir / "complex64.zarr";
  CHECK(mkdir(bad.c_str(), 0755) == 0);
  write_file(bad + "/zarr.json", R"({
    "zarr_format": 3, "node_type": "array", "shape": [16, 16, 16], "data_type": "complex64",
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [8, 8, 8]}},
    "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
    "fill_value": [0.0, 0.0], "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}],
    "attributes": {}})");
  fails_then_recovers<damacy::DtypeMismatch>(uri, {bad, box(0, 0, 0)}, [](const auto& e) {
    CHECK(e.status() == damacy::Status::DtypeMismatch);
    CHECK(contains(e.message(), "complex64"));
  });
}

TEST(error_storage_truncated_shard_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const std::string bad = write_good(dir, "truncated.zarr");
  const std::string shard = bad + "/c/0/0/0";
  const std::string bytes = read_file(shard);
  CHECK(bytes.size() > 64);
  write_file(shard, bytes.substr(0, bytes.size() / 2));
  fails_then_recovers<damacy::StorageError>(uri, {bad, box(0, 0, 0)}, [](const auto& e) {
    CHECK(e.status() == damacy::Status::Storage);
    CHECK(contains(e.message(), "truncated.zarr"));
  });
}

TEST(error_decode_corrupt_chunk_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const std::string bad = write_unsharded(dir, "corrupt.zarr", "zstd");
  const std::string chunk = bad + "/c/0/0/0";
  std::string bytes = read_file(chunk);
  CHECK(!bytes.empty());
  std::mt19937 rng(99);
  for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
  write_file(chunk, bytes);
  fails_then_recovers<damacy::DecodeError>(uri, {bad, box(0, 0, 0)}, [](const auto& e) {
    CHECK(e.status() == damacy::Status::Decode);
    CHECK(contains(e.message(), "corrupt.zarr"));
  });
}

TEST(error_budget_exceeded_staging_at_pop) {
  TempDir dir;
  const std::string uri = write_good(dir);
  damacy::Pipeline p(cfg(2, R"(, "staging_bytes": 16)"));
  CHECK(p.push({uri, box(0, 0, 0)}));
  CHECK(p.push({uri, box(8, 8, 8)}));
  CHECK_THROWS(damacy::BudgetExceeded, p.pop(), CHECK(contains(e.message(), "staging_bytes")));
}

TEST(error_try_again_pop_timeout_on_partial_batch) {
  TempDir dir;
  const std::string uri = write_good(dir);
  damacy::Pipeline p(cfg(2));
  const auto bs = boxes(2, 8);
  CHECK(p.push({uri, bs[0]}));  // half a batch: nothing can be popped
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS(damacy::TryAgain, p.pop(0.2), CHECK(e.status() == damacy::Status::TryAgain));
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= std::chrono::milliseconds(150));
  CHECK(waited < std::chrono::seconds(3));
  CHECK(p.push({uri, bs[1]}));  // still usable: the batch completes and pops
  CHECK(same_bytes(p.pop(), read(uri, bs)));
}

TEST(error_shutdown_pop_and_push_after_close) {
  TempDir dir;
  const std::string uri = write_good(dir);
  damacy::Pipeline p(cfg(2));
  const auto bs = boxes(2, 9);
  CHECK(p.push({uri, bs[0]}));
  CHECK(p.push({uri, bs[1]}));
  p.close();
  CHECK_THROWS(damacy::ShutdownError, p.pop(1.0), CHECK(e.status() == damacy::Status::Shutdown));
  CHECK_THROWS(damacy::ShutdownError, p.push({uri, bs[0]}), (void)e);
  CHECK_THROWS(damacy::ShutdownError, p.pop_batch(1.0), (void)e);
  p.close();  // idempotent
}

TEST(error_pool_starved_while_all_buffers_are_held) {
  TempDir dir;
  const std::string uri = write_good(dir);
  const auto bs = boxes(6, 10);
  damacy::Pipeline p(cfg(2, R"(, "n_batch_buffers": 2)"));
  for (const Box& b : bs) CHECK(p.push({uri, b}));
  std::vector<at::Tensor> held = {p.pop(), p.pop()};
  CHECK_THROWS(damacy::PoolStarved, p.pop(0.5), {
    CHECK(e.status() == damacy::Status::PoolStarved);
    CHECK(contains(e.message(), "n_batch_buffers"));
  });
  CHECK(same_bytes(held[0], read(uri, {bs[0], bs[1]})));
  CHECK(same_bytes(held[1], read(uri, {bs[2], bs[3]})));
  held.clear();  // the buffers go back to the pool with the last reference
  CHECK(same_bytes(p.pop(), read(uri, {bs[4], bs[5]})));
}
