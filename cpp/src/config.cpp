// damacy::Config over the bridge's opaque Rust Config (no torch).
#include "damacy/config.h"

#include <string>

#include "bridge.h"

namespace damacy {

namespace detail {
rust::Str str(std::string_view s, std::string_view what) {
  try {
    return rust::Str(s.data(), s.size());
  } catch (const std::invalid_argument&) {
    std::string message(what);
    message += " is not valid UTF-8";
    throw InvalidArgument(message);
  }
}

std::shared_ptr<const ffi::Config> share(rust::Box<ffi::Config> box) {
  // The deleter hands the pointer back to Rust's Box, which frees it.
  return std::shared_ptr<const ffi::Config>(box.into_raw(), [](const ffi::Config* p) {
    (void)rust::Box<ffi::Config>::from_raw(const_cast<ffi::Config*>(p));
  });
}
std::vector<std::string> rust_status_tokens() {
  std::vector<std::string> out;
  for (const auto& t : ffi::status_tokens()) out.emplace_back(t);
  return out;
}

// damacy::Status is the bridge's Status, value for value (tokens: status_tokens_match_rust).
#define DAMACY_SAME_STATUS(v) \
  static_assert(static_cast<int>(Status::v) == static_cast<int>(ffi::Status::v), "Status::" #v " differs from Rust's")
DAMACY_SAME_STATUS(TryAgain);
DAMACY_SAME_STATUS(InvalidArgument);
DAMACY_SAME_STATUS(NotFound);
DAMACY_SAME_STATUS(DtypeMismatch);
DAMACY_SAME_STATUS(RankMismatch);
DAMACY_SAME_STATUS(Storage);
DAMACY_SAME_STATUS(Decode);
DAMACY_SAME_STATUS(Cuda);
DAMACY_SAME_STATUS(OutOfMemory);
DAMACY_SAME_STATUS(BudgetExceeded);
DAMACY_SAME_STATUS(Shutdown);
DAMACY_SAME_STATUS(PoolStarved);
DAMACY_SAME_STATUS(Internal);
#undef DAMACY_SAME_STATUS
}  // namespace detail

Config Config::defaults() { return Config(detail::share(ffi::config_default())); }

Config Config::from_json(std::string_view json) {
  auto cfg = detail::call([&] { return ffi::config_from_json(detail::str(json, "config JSON")); });
  return Config(detail::share(std::move(cfg)));
}

std::string Config::to_json() const { return std::string(cfg_->to_json()); }

std::uint32_t Config::samples_per_batch() const noexcept { return cfg_->samples_per_batch(); }

std::vector<std::uint64_t> Config::sample_shape() const {
  const auto v = cfg_->sample_shape_vec();
  return {v.begin(), v.end()};
}

std::string Config::dtype() const { return std::string(cfg_->dtype_name()); }

std::string Config::device() const { return std::string(cfg_->device_name()); }

std::string Config::decode() const { return std::string(cfg_->decode_name()); }

bool Config::decodes_on_device() const noexcept { return cfg_->decodes_on_device(); }

Config Config::resolved(std::string_view unavailable) const {
  auto cfg = detail::call([&] { return cfg_->resolve(detail::str(unavailable, "reason")); });
  return Config(detail::share(std::move(cfg)));
}

double Config::pop_timeout_s() const noexcept { return cfg_->pop_timeout(); }

std::uint32_t Config::device_ahead() const noexcept { return cfg_->device_ahead(); }

}  // namespace damacy
