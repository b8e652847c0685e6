// Smoke test of the nvCOMP loader, host-side (no GPU needed): search order, which major it
// bound (6.x or 5.x), symbol binding, alignments and temp size; then whether a CUDA device
// is there for the decode path.
// Usage: nvcomp_loader_smoke [--expect-major N] [--need-device] [search_dir ...]
// Exit status (see dev/gpu/build_check.sh and dev/gpu/device_run.sh):
//   0  every host-side check passed (and, with --need-device, a CUDA device is usable)
//   1  a check failed (a query failed, or the bound major is not --expect-major's)
//   2  nvCOMP was not found: the reason and the fix are printed
//   3  --need-device and no usable CUDA device: cudaGetDeviceCount's error is printed
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "nvcomp/nvcomp_loader.h"

namespace nv = damacy::nvcomp;

int main(int argc, char** argv) {
  std::vector<std::string> dirs;
  unsigned expect_major = 0;
  bool need_device = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--need-device") == 0) {
      need_device = true;
    } else if (std::strcmp(argv[i], "--expect-major") == 0 && i + 1 < argc) {
      expect_major = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else {
      dirs.emplace_back(argv[i]);
    }
  }
  const char* env = std::getenv("DAMACY_NVCOMP_LIBRARY");
  std::printf("DAMACY_NVCOMP_LIBRARY: %s\n", env ? env : "(unset)");
  const bool ok = nv::load(dirs);
  std::printf("available: %d\n", ok ? 1 : 0);
  if (!ok) {
    std::printf("%s\n", nv::why_unavailable().c_str());
    return 2;
  }
  const unsigned v = nv::library_version();
  std::printf("path: %s\nversion: %u (nvCOMP %u.%u.%u)\nmajor: %u\n", nv::library_path().c_str(),
              v, v / 1000, (v % 1000) / 100, v % 100, nv::library_major());
  int fails = 0;
  if (expect_major != 0 && nv::library_major() != expect_major) {
    std::printf("expected major %u\n", expect_major);
    ++fails;
  }
  bool no_device = false;
  for (nv::Codec c : {nv::Codec::Zstd, nv::Codec::Lz4}) {
    nv::Alignments a{};
    nv::Status s = nv::required_alignments(c, &a);
    std::printf("%s alignments: %s input=%zu output=%zu temp=%zu\n", nv::codec_name(c),
                nv::status_name(s), a.input, a.output, a.temp);
    if (s != nv::Status::Success) ++fails;
    size_t temp = 0;
    s = nv::decompress_temp_bytes(c, 1024, 512 << 10, size_t(1024) * (512 << 10), &temp,
                                  /*stream=*/nullptr);
    std::printf("%s temp bytes (1024 x 512 KiB): %s %zu\n", nv::codec_name(c), nv::status_name(s),
                temp);
    // Host-side queries; without a device nvCOMP may answer nvcompErrorCudaError. Anything
    // else means the binding is wrong.
    if (s == nv::Status::ErrorCudaError) no_device = true;
    else if (s != nv::Status::Success) ++fails;
  }
  if (no_device) {
    std::printf("note: nvCOMP answered nvcompErrorCudaError to a host-side query: no usable "
                "CUDA device here (the binding itself is fine)\n");
  }
  std::printf("host-side checks: %s\n", fails ? "FAIL" : "PASS");
  if (fails) return 1;
  int devices = 0;
  const cudaError_t rc = cudaGetDeviceCount(&devices);
  if (rc != cudaSuccess || devices == 0) {
    std::printf("no usable CUDA device: %s (%s); nvCOMP %u.%u is bound, but the GPU decode path "
                "cannot run here\n",
                rc != cudaSuccess ? cudaGetErrorName(rc) : "0 devices",
                rc != cudaSuccess ? cudaGetErrorString(rc) : "cudaGetDeviceCount found none",
                v / 1000, (v % 1000) / 100);
    return need_device ? 3 : 0;
  }
  std::printf("CUDA devices: %d\n", devices);
  return 0;
}
