// Host-only smoke test of the nvCOMP loader (no GPU needed): search order, symbol binding,
// version, alignments and temp size. Usage: nvcomp_loader_smoke [search_dir ...]
// Exit 0 when every check matches what the environment should give (see dev/gpu/build_check.sh).
#include <cstdio>
#include <string>
#include <vector>

#include "nvcomp/nvcomp_loader.h"

namespace nv = damacy::nvcomp;

int main(int argc, char** argv) {
  std::vector<std::string> dirs(argv + 1, argv + argc);
  const bool ok = nv::load(dirs);
  std::printf("available: %d\n", ok ? 1 : 0);
  if (!ok) {
    std::printf("%s\n", nv::why_unavailable().c_str());
    return 2;
  }
  std::printf("path: %s\nversion: %u\n", nv::library_path().c_str(), nv::library_version());
  int fails = 0;
  for (nv::Codec c : {nv::Codec::Zstd, nv::Codec::Lz4}) {
    nvcompAlignmentRequirements_t a{};
    nvcompStatus_t s = nv::required_alignments(c, &a);
    std::printf("%s alignments: %s input=%zu output=%zu temp=%zu\n", nv::codec_name(c),
                nv::status_name(s), a.input, a.output, a.temp);
    size_t temp = 0;
    s = nv::decompress_temp_bytes(c, 1024, 512 << 10, size_t(1024) * (512 << 10), &temp);
    std::printf("%s temp bytes (1024 x 512 KiB): %s %zu\n", nv::codec_name(c), nv::status_name(s),
                temp);
    // Host-side queries need no device; a failure here means the binding is wrong.
    if (s != nvcompSuccess && s != nvcompErrorCudaError) ++fails;
  }
  std::printf("%s\n", fails ? "FAIL" : "PASS");
  return fails ? 1 : 0;
}
