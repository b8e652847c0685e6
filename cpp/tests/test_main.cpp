// Tests of the C++ API that need no data: status tokens, error mapping, config validation,
// pipeline construction. They link libdamacy_torch.so like a downstream program does, so they
// also check that the API and the exceptions' typeinfo are exported.
#include <string>
#include <string_view>
#include <typeinfo>

#include "damacy/damacy.h"
#include "harness.h"
#include "torch_errors.h"  // private (cpp/src): torch's device errors as damacy errors

namespace {

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

// The subclass thrown for `s` must be catchable as itself; checked per status.
template <class Exc>
void expect_type(damacy::Status s) {
  std::string wire = "[";  // (not "[" + std::string(..): GCC 12 -Wrestrict false positive)
  wire += damacy::token(s);
  wire += "] uri /x: chunk c/0/1 bad";
  CHECK_THROWS(Exc, damacy::throw_error_message(wire), {
    CHECK(e.status() == s);
    CHECK_EQ(std::string(e.what()), wire);
    CHECK_EQ(e.message(), std::string_view("uri /x: chunk c/0/1 bad"));
  });
}

}  // namespace

TEST(token_round_trip_every_status) {
  for (damacy::Status s : damacy::kAllStatuses) {
    auto back = damacy::status_from_token(damacy::token(s));
    CHECK(back.has_value());
    CHECK(*back == s);
  }
  CHECK(!damacy::status_from_token("Nope").has_value());
  CHECK(!damacy::status_from_token("").has_value());
}

TEST(error_message_round_trip_every_status) {
  using S = damacy::Status;
  expect_type<damacy::TryAgain>(S::TryAgain);
  expect_type<damacy::InvalidArgument>(S::InvalidArgument);
  expect_type<damacy::NotFound>(S::NotFound);
  expect_type<damacy::DtypeMismatch>(S::DtypeMismatch);
  expect_type<damacy::RankMismatch>(S::RankMismatch);
  expect_type<damacy::StorageError>(S::Storage);
  expect_type<damacy::DecodeError>(S::Decode);
  expect_type<damacy::CudaError>(S::Cuda);
  expect_type<damacy::OutOfMemory>(S::OutOfMemory);
  expect_type<damacy::BudgetExceeded>(S::BudgetExceeded);
  expect_type<damacy::ShutdownError>(S::Shutdown);
  expect_type<damacy::PoolStarved>(S::PoolStarved);
  expect_type<damacy::InternalError>(S::Internal);
  // Every subclass is a damacy::Error and a std::runtime_error; throw_error agrees.
  for (damacy::Status s : damacy::kAllStatuses) {
    CHECK_THROWS(damacy::Error, damacy::throw_error(s, "m"), {
      CHECK(e.status() == s);
      CHECK_EQ(e.message(), std::string_view("m"));
    });
    CHECK_THROWS(std::runtime_error, damacy::throw_error(s, "m"),
                 CHECK(contains(e.what(), damacy::token(s))));
  }
}

TEST(message_without_token_is_internal) {
  for (std::string_view bad : {"no token", "[Bogus] text", "[TryAgain]no space", ""}) {
    CHECK_THROWS(damacy::InternalError, damacy::throw_error_message(bad),
                 CHECK(contains(e.what(), bad)));
  }
}

TEST(config_defaults_round_trip) {
  const auto d = damacy::Config::defaults();
  CHECK(d.samples_per_batch() >= 1);
  CHECK(!d.sample_shape().empty());
  CHECK_EQ(d.dtype(), std::string("f32"));
  CHECK_EQ(d.device(), std::string("cpu"));
  const auto again = damacy::Config::from_json(d.to_json());
  CHECK_EQ(again.to_json(), d.to_json());
  const auto c = damacy::Config::from_json(R"({"samples_per_batch": 2, "sample_shape": [4, 5, 6], "dtype": "bf16"})");
  CHECK_EQ(c.samples_per_batch(), 2u);
  CHECK(c.sample_shape() == (std::vector<std::uint64_t>{4, 5, 6}));
  CHECK_EQ(c.dtype(), std::string("bf16"));
}

TEST(config_from_json_unknown_field_is_invalid_argument) {
  CHECK_THROWS(damacy::InvalidArgument, damacy::Config::from_json(R"({"foo": 1})"), {
    CHECK(e.status() == damacy::Status::InvalidArgument);
    CHECK(contains(e.what(), "[InvalidArgument] "));
    CHECK(contains(e.message(), "foo"));
  });
  CHECK_THROWS(damacy::InvalidArgument, damacy::Config::from_json(R"({"sample_shape": [4, 0]})"),
               CHECK(contains(e.message(), "sample_shape")));
}

TEST(config_from_json_bad_json_is_invalid_argument) {
  CHECK_THROWS(damacy::InvalidArgument, damacy::Config::from_json("{not json"),
               CHECK(contains(e.message(), "JSON")));
  CHECK_THROWS(damacy::InvalidArgument, damacy::Config::from_json("[1, 2]"), (void)e);
}

TEST(config_from_json_non_utf8_is_invalid_argument) {
  CHECK_THROWS(damacy::InvalidArgument, damacy::Config::from_json("{\"\xff\": 1}"),
               CHECK(contains(e.message(), "UTF-8")));
}

TEST(pipeline_bad_config_is_invalid_argument) {
  CHECK_THROWS(damacy::InvalidArgument, damacy::Pipeline(R"({"samples_per_batch": 0})"),
               CHECK(contains(e.message(), "samples_per_batch")));
  CHECK_THROWS(damacy::InvalidArgument,
               damacy::Pipeline(R"({"samples_per_batch": 100, "lookahead_samples": 10})"),
               CHECK(contains(e.message(), "lookahead_samples")));
}

TEST(pipeline_pop_without_push_is_try_again) {
  damacy::Pipeline p(damacy::Config::from_json(R"({"samples_per_batch": 2, "sample_shape": [4, 4, 4]})"));
  CHECK_EQ(p.pending_samples(), 0u);
  CHECK_THROWS(damacy::TryAgain, p.pop(0.01), CHECK(e.status() == damacy::Status::TryAgain));
}

TEST(pipeline_close_is_idempotent) {
  damacy::Pipeline p(R"({"samples_per_batch": 2, "sample_shape": [4, 4, 4]})");
  p.close();
  p.close();
  damacy::Pipeline moved(std::move(p));
  moved.close();
  CHECK_THROWS(damacy::ShutdownError, p.pop(0.0), (void)e);  // moved-from
}

TEST(array_info_missing_array_is_not_found) {
  CHECK_THROWS(damacy::NotFound, damacy::array_info("/nonexistent/damacy-test.zarr"),
               CHECK(contains(e.message(), "/nonexistent/damacy-test.zarr")));
  CHECK_THROWS(damacy::NotFound, damacy::array_info_json("/nonexistent/damacy-test.zarr"), (void)e);
}

// C++'s status set is Rust's, token for token and in order (the values are static_asserted
// against the bridge's enum; this checks the spelling).
TEST(status_tokens_match_rust) {
  const std::vector<std::string> rust = damacy::detail::rust_status_tokens();
  CHECK_EQ(rust.size(), damacy::kAllStatuses.size());
  for (std::size_t i = 0; i < rust.size() && i < damacy::kAllStatuses.size(); ++i) {
    CHECK_EQ(rust[i], std::string(damacy::token(damacy::kAllStatuses[i])));
  }
}

// A pipeline that falls back from GPU to CPU decode (decode="auto" on a device this build
// cannot decode on) logs one Warning into the sink, never to stderr; set_log_level filters.
TEST(log_fallback_warning_goes_to_the_sink) {
  const char* cfg = R"({"samples_per_batch": 2, "sample_shape": [4, 4, 4], "device": "cuda:0", "decode": "auto"})";
  (void)damacy::take_log_records();
  damacy::set_log_level(20);
  {
    damacy::Pipeline p(cfg);
    const auto records = damacy::take_log_records();
    CHECK_EQ(records.size(), 1u);
    if (!records.empty()) {
      CHECK(records[0].level == damacy::LogLevel::Warning);
      CHECK(contains(records[0].message, "decoding on the CPU (decode=\"auto\")"));
    }
    CHECK(damacy::take_log_records().empty());  // taken
  }
  damacy::set_log_level(40);  // Error and above only
  {
    damacy::Pipeline p(cfg);
    CHECK(damacy::take_log_records().empty());
  }
  damacy::set_log_level(20);
}

// torch's exceptions from device work become CudaError / OutOfMemory naming what failed
// (one line; torch's hint lines dropped); damacy's own errors pass through.
TEST(torch_device_errors_map_to_cuda_error) {
  using damacy::detail::on_device;
  CHECK_THROWS(damacy::CudaError,
               on_device("finishing a batch on cuda:0",
                         []() -> int {
                           throw c10::AcceleratorError({__func__, __FILE__, __LINE__}, 700,
                                                       "CUDA error: an illegal memory access was encountered\n"
                                                       "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.");
                         }),
               {
                 CHECK_EQ(std::string(e.message()),
                          std::string("finishing a batch on cuda:0: CUDA error: an illegal memory access was "
                                      "encountered (CUDA error 700)"));
               });
  CHECK_THROWS(damacy::OutOfMemory,
               on_device("launching a batch on cuda:0",
                         [] { throw c10::OutOfMemoryError({__func__, __FILE__, __LINE__}, "CUDA out of memory."); }),
               CHECK(contains(e.message(), "launching a batch on cuda:0: CUDA out of memory.")));
  CHECK_THROWS(damacy::CudaError,
               on_device("starting the device runner on cuda:7",
                         [] { throw c10::Error({__func__, __FILE__, __LINE__}, "Invalid device index 7"); }),
               CHECK(contains(e.message(), "starting the device runner on cuda:7: Invalid device index 7")));
  CHECK_THROWS(damacy::DecodeError, on_device("x", [] { throw damacy::DecodeError("chunk c/0"); }),
               CHECK_EQ(std::string(e.message()), std::string("chunk c/0")));
  CHECK_EQ(on_device("x", [] { return 7; }), 7);
}

int main(int argc, char** argv) { return harness::main(argc, argv); }
