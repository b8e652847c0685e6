// TORCH_LIBRARY(damacy): every op schema of the extension, and nothing else (dev/ops.md is
// the contract). Each op calls the C++ API; its damacy::Error reaches Python as a
// RuntimeError whose message starts with "[Token] ", which python/damacy/_ops.py maps back.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ops/from_blob.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include "damacy/damacy.h"
#include "log_sink.h"

namespace damacy {
namespace {

// torch.classes.damacy.Pipeline: the C++ Pipeline, held by c10::intrusive_ptr.
struct PipelineObject final : torch::CustomClassHolder {
  explicit PipelineObject(const std::string& config_json) : pipeline(config_json) {}
  Pipeline pipeline;
};
using Self = c10::intrusive_ptr<PipelineObject>;

std::string config_defaults_op() { return Config::defaults().to_json(); }

std::string validate_config_op(std::string json) { return Config::from_json(json).to_json(); }

std::string array_info_op(std::string uri, bool usage) { return array_info_json(uri, usage); }

// The status tokens in the shared order (Python checks damacy.errors against them).
std::vector<std::string> statuses_op() {
  std::vector<std::string> out;
  for (Status s : kAllStatuses) out.emplace_back(token(s));
  return out;
}

// A batch's samples as (uris, boxes): boxes flattened per sample as
// [rank, start_0..start_{r-1}, stop_0..stop_{r-1}] (torch ops have no nested int lists).
std::tuple<at::Tensor, std::vector<std::string>, std::vector<std::int64_t>> pop_with_samples(Pipeline& p,
                                                                                              double timeout_s) {
  Batch b = p.pop_batch(timeout_s);
  std::vector<std::string> uris;
  std::vector<std::int64_t> boxes;
  uris.reserve(b.samples.size());
  for (const Sample& s : b.samples) {
    uris.push_back(s.uri);
    boxes.push_back(static_cast<std::int64_t>(s.aabb.size()));
    for (const auto& r : s.aabb) boxes.push_back(r.first);
    for (const auto& r : s.aabb) boxes.push_back(r.second);
  }
  return {std::move(b.tensor), std::move(uris), std::move(boxes)};
}

// Many samples in one call (one op dispatch instead of one per sample): `uris[i]` with its
// box in `boxes` flattened as [rank, starts.., stops..] (pop_with_samples' layout). Pushes in
// order until the window is full; returns (how many were pushed, the window's room after).
// A sample whose push throws is the first of the next call, so its error is raised for it
// alone: when sample i > 0 throws, this returns (i, room) and the next call raises.
// `transforms`: empty, or 4 words per sample (dev/ops.md, push_many): the sample's
// SampleTransform as scale | shift << 32 (float32 bits), noise_g | noise_b << 32, map,
// noise_factor (float32 bits) | intensity << 32.
SampleTransform transform_of(const std::vector<std::int64_t>& w, std::size_t i) {
  const auto word = [&](std::size_t k) { return static_cast<std::uint64_t>(w[4 * i + k]); };
  const auto f32 = [](std::uint64_t bits) {
    const auto b = static_cast<std::uint32_t>(bits);
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  };
  SampleTransform t;
  t.scale = f32(word(0));
  t.shift = f32(word(0) >> 32);
  t.noise_g = static_cast<std::uint32_t>(word(1));
  t.noise_b = static_cast<std::uint32_t>(word(1) >> 32);
  t.map = word(2);
  t.noise_factor = f32(word(3));
  t.intensity = ((word(3) >> 32) & 1u) != 0;
  return t;
}

std::tuple<std::int64_t, std::int64_t> push_many(Pipeline& p, const std::vector<std::string>& uris,
                                                 const std::vector<std::int64_t>& boxes,
                                                 const std::vector<std::int64_t>& transforms) {
  if (!transforms.empty() && transforms.size() != 4 * uris.size()) {
    throw InvalidArgument("push_many: transforms must hold 4 words for each of the " + std::to_string(uris.size()) +
                          " uris, found " + std::to_string(transforms.size()));
  }
  std::size_t at = 0;
  std::size_t i = 0;
  std::vector<std::int64_t> starts, stops;
  for (; i < uris.size(); ++i) {
    try {
      if (at >= boxes.size() || boxes[at] < 0 ||
          static_cast<std::uint64_t>(boxes[at]) > (boxes.size() - at - 1) / 2) {
        throw InvalidArgument("push_many: boxes must hold [rank, starts.., stops..] for each of the " +
                              std::to_string(uris.size()) + " uris; sample " + std::to_string(i) + " has none");
      }
      const auto rank = static_cast<std::size_t>(boxes[at]);
      const auto first = boxes.begin() + static_cast<std::ptrdiff_t>(at + 1);
      starts.assign(first, first + static_cast<std::ptrdiff_t>(rank));
      stops.assign(first + static_cast<std::ptrdiff_t>(rank), first + static_cast<std::ptrdiff_t>(2 * rank));
      const bool pushed = transforms.empty() ? p.push(uris[i], starts, stops)
                                             : p.push(uris[i], starts, stops, transform_of(transforms, i));
      if (!pushed) break;
      at += 1 + 2 * rank;
    } catch (...) {
      if (i == 0) throw;
      break;
    }
  }
  return {static_cast<std::int64_t>(i), static_cast<std::int64_t>(p.window_room())};
}

std::string gpu_info_op(std::string search_path) { return gpu_info_json(search_path); }

// The kept log records as (levels, messages); python/damacy/_log.py emits them on logging.
std::tuple<std::vector<std::int64_t>, std::vector<std::string>> take_log_records_op() {
  std::vector<std::int64_t> levels;
  std::vector<std::string> messages;
  for (LogRecord& r : take_log_records()) {
    levels.push_back(static_cast<std::int64_t>(r.level));
    messages.push_back(std::move(r.message));
  }
  return {std::move(levels), std::move(messages)};
}

void set_log_level_op(std::int64_t level) { set_log_level(static_cast<int>(level)); }

// The count of kept records as a one-element int64 CPU tensor that views it (no copy): Python
// reads it (`.item()`, no op call) after each op call and takes records only when it is not 0.
// Read it only; it lives as long as the process.
at::Tensor log_records_waiting_op() {
  return at::from_blob(detail::log_records_waiting_word(), {1}, at::TensorOptions().dtype(at::kLong));
}

std::vector<std::uint64_t> extents(const std::vector<std::int64_t>& v, const char* what) {
  std::vector<std::uint64_t> out;
  out.reserve(v.size());
  for (std::int64_t x : v) {
    if (x < 0) {
      throw InvalidArgument(std::string(what) + ": expected non-negative sizes, found " + std::to_string(x));
    }
    out.push_back(static_cast<std::uint64_t>(x));
  }
  return out;
}

void write_example_volume_op(std::string path, std::vector<std::int64_t> shape,
                             std::vector<std::int64_t> chunk, std::vector<std::int64_t> shard,
                             std::string codec, std::int64_t seed) {
  damacy::write_example_volume(path, extents(shape, "shape"), extents(chunk, "chunk"),
                               extents(shard, "shard"), codec, static_cast<std::uint64_t>(seed));
}

}  // namespace
}  // namespace damacy

TORCH_LIBRARY(damacy, m) {
  using damacy::Self;
  m.class_<damacy::PipelineObject>("Pipeline")
      .def(torch::init<std::string>(), "Starts a pipeline from a config JSON object.",
           {torch::arg("config_json")})
      .def(
          "push",
          [](const Self& self, std::string uri, std::vector<std::int64_t> starts,
             std::vector<std::int64_t> stops) { return self->pipeline.push(uri, starts, stops); },
          "Offers one sample; false when the lookahead window is full (pop first).",
          {torch::arg("uri"), torch::arg("starts"), torch::arg("stops")})
      .def(
          "push_many",
          [](const Self& self, std::vector<std::string> uris, std::vector<std::int64_t> boxes,
             std::vector<std::int64_t> transforms) {
            return damacy::push_many(self->pipeline, uris, boxes, transforms);
          },
          "Offers samples in order until the window is full (boxes as [rank, starts.., stops..] per "
          "uri; transforms empty or 4 words per uri); returns (how many were pushed, the window's room after).",
          {torch::arg("uris"), torch::arg("boxes"), torch::arg("transforms") = std::vector<std::int64_t>{}})
      .def("window_room", [](const Self& self) { return static_cast<std::int64_t>(self->pipeline.window_room()); })
      .def(
          "pop", [](const Self& self, double timeout_s) { return self->pipeline.pop(timeout_s); },
          "The next batch; negative timeout: the config's pop_timeout_s.",
          {torch::arg("timeout_s") = -1.0})
      .def(
          "pop_with_samples",
          [](const Self& self, double timeout_s) { return damacy::pop_with_samples(self->pipeline, timeout_s); },
          "pop() plus the batch's samples: (tensor, uris, boxes as [rank, starts.., stops..] per sample).",
          {torch::arg("timeout_s") = -1.0})
      .def("pending_samples",
           [](const Self& self) { return static_cast<std::int64_t>(self->pipeline.pending_samples()); })
      .def("stats", [](const Self& self) { return self->pipeline.stats(); })
      .def("close", [](const Self& self) { self->pipeline.close(); });

  m.def("config_defaults() -> str", &damacy::config_defaults_op);
  m.def("validate_config(str json) -> str", &damacy::validate_config_op);
  m.def("array_info(str uri, bool usage) -> str", &damacy::array_info_op);
  m.def("statuses() -> str[]", &damacy::statuses_op);
  m.def("gpu_info(str search_path) -> str", &damacy::gpu_info_op);
  m.def("take_log_records() -> (int[], str[])", &damacy::take_log_records_op);
  m.def("set_log_level(int level) -> ()", &damacy::set_log_level_op);
  m.def("log_records_waiting() -> Tensor", &damacy::log_records_waiting_op);
  m.def("write_example_volume(str path, int[] shape, int[] chunk, int[] shard, str codec, int seed) -> ()",
        &damacy::write_example_volume_op);
  // Augment's fused pass (dev/ops.md). Schema only: the kernel is registered for CUDA by
  // cpp/src/device/augment.cpp (CUDA build), the fake by python/damacy/_ops.py.
  m.def("augment(Tensor x, Tensor params, float noise_std, bool intensity) -> Tensor");
}
