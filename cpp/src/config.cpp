// damacy::Config over the bridge's PipelineConfig (no torch).
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
}  // namespace detail

Config Config::defaults() {
  return Config(std::make_shared<const ffi::PipelineConfig>(ffi::default_config()));
}

Config Config::from_json(std::string_view json) {
  auto cfg = detail::call([&] { return ffi::config_from_json(detail::str(json, "config JSON")); });
  return Config(std::make_shared<const ffi::PipelineConfig>(std::move(cfg)));
}

std::string Config::to_json() const { return std::string(ffi::config_to_json(*cfg_)); }

std::uint32_t Config::samples_per_batch() const noexcept { return cfg_->samples_per_batch; }

std::vector<std::uint64_t> Config::sample_shape() const {
  return {cfg_->sample_shape.begin(), cfg_->sample_shape.end()};
}

std::string Config::dtype() const { return std::string(cfg_->dtype); }

std::string Config::device() const { return std::string(cfg_->device); }

std::string Config::decode() const { return std::string(cfg_->decode); }

Config Config::with_decode(std::string_view decode) const {
  auto cfg = std::make_shared<ffi::PipelineConfig>(*cfg_);
  cfg->decode = rust::String(std::string(decode));
  // Re-validate through Rust's single pass.
  return from_json(std::string(ffi::config_to_json(*cfg)));
}

double Config::pop_timeout_s() const noexcept { return cfg_->pop_timeout_s; }

}  // namespace damacy
