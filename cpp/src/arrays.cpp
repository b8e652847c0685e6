// Array-level helpers over the bridge (no torch).
#include "damacy/arrays.h"

#include "bridge.h"

namespace damacy {

std::string array_info_json(std::string_view uri) {
  return std::string(detail::call([&] { return ffi::array_info_json(detail::str(uri, "uri")); }));
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
