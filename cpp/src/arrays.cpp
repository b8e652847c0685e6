// Array-level helpers over the bridge (no torch).
#include "damacy/arrays.h"

#include "bridge.h"
#if DAMACY_WITH_CUDA
#include "device/device_batch.h"
#endif

namespace damacy {

std::string gpu_info_json(std::string_view search_path) {
#if DAMACY_WITH_CUDA
  return detail::gpu_info_json(std::string(search_path));
#else
  (void)search_path;
  return "{\"cuda_built\": false, \"nvcomp_available\": false, \"nvcomp_path\": \"\", "
         "\"nvcomp_version\": 0, \"nvcomp_major\": 0, \"why\": \"this damacy build has no CUDA support\"}";
#endif
}

ArrayInfo array_info(std::string_view uri, bool usage) {
  const ffi::ArrayInfo a = detail::call([&] { return ffi::array_info(detail::str(uri, "uri"), usage); });
  ArrayInfo out;
  out.uri = std::string(a.uri);
  out.shape.assign(a.shape.begin(), a.shape.end());
  out.data_type = std::string(a.data_type);
  out.chunk_shape.assign(a.chunk_shape.begin(), a.chunk_shape.end());
  out.shard_shape.assign(a.shard_shape.begin(), a.shard_shape.end());
  out.index_at_start = a.index_at_start;
  out.codecs_json = std::string(a.codecs_json);
  for (const auto& n : a.dimension_names) out.dimension_names.emplace_back(n);
  out.files = a.files;
  out.bytes_stored = a.bytes_stored;
  out.bytes_decoded = a.bytes_decoded;
  return out;
}

std::string array_info_json(std::string_view uri, bool usage) {
  return std::string(detail::call([&] { return ffi::array_info_json(detail::str(uri, "uri"), usage); }));
}

void write_example_volume(std::string_view path, const std::vector<std::uint64_t>& shape,
                          const std::vector<std::uint64_t>& chunk_shape,
                          const std::vector<std::uint64_t>& shard_shape, std::string_view codec,
                          std::uint64_t seed) {
  using Extents = rust::Slice<const std::uint64_t>;
  detail::call([&] {
    ffi::write_example_volume(detail::str(path, "path"), Extents(shape.data(), shape.size()),
                              Extents(chunk_shape.data(), chunk_shape.size()),
                              Extents(shard_shape.data(), shard_shape.size()),
                              detail::str(codec, "codec"), seed);
  });
}

}  // namespace damacy
