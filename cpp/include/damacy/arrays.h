// Array-level helpers of the C++ API (no torch): facts about an array, example volumes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace damacy {

/// Facts about the Zarr array at `uri` (shape, dtype, chunk and shard shape, codecs, bytes
/// on disk) as a JSON object. @throws NotFound, StorageError.
std::string array_info_json(std::string_view uri);

/// Writes a synthetic microscopy-like uint16 Zarr v3 array (smooth blobs plus noise) at
/// `path`. `codec`: "zstd" or "blosc-zstd"; an empty `shard_shape` means unsharded.
/// @throws InvalidArgument, StorageError.
void write_example_volume(std::string_view path, const std::vector<std::uint64_t>& shape,
                          const std::vector<std::uint64_t>& chunk_shape,
                          const std::vector<std::uint64_t>& shard_shape, std::string_view codec,
                          std::uint64_t seed);

/// What this build can do on the GPU, as a JSON object: {"cuda_built", "nvcomp_available",
/// "nvcomp_path", "nvcomp_version", "why"}. Loads nvCOMP once, searching the `:`-separated
/// folders in `search_path` (e.g. Python's sys.path) for the nvidia-libnvcomp-cu13 wheel.
std::string gpu_info_json(std::string_view search_path);

}  // namespace damacy
