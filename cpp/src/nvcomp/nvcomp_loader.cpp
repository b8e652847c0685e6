// nvCOMP bound at run time; see nvcomp_loader.h for the search order and the contract.
#include "nvcomp_loader.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>
#include <string_view>

#include "nvcomp.h"
#include "nvcomp/lz4.h"
#include "nvcomp/zstd.h"

namespace damacy::nvcomp {
namespace {

// The entry points' types come from the headers (decltype of an unevaluated address: no
// link-time reference to libnvcomp).
using GetPropertiesFn = decltype(&nvcompGetProperties);
using ZstdAlignFn = decltype(&nvcompBatchedZstdDecompressGetRequiredAlignments);
using ZstdTempFn = decltype(&nvcompBatchedZstdDecompressGetTempSizeAsync);
using ZstdDecompressFn = decltype(&nvcompBatchedZstdDecompressAsync);
using Lz4AlignFn = decltype(&nvcompBatchedLZ4DecompressGetRequiredAlignments);
using Lz4TempFn = decltype(&nvcompBatchedLZ4DecompressGetTempSizeAsync);
using Lz4DecompressFn = decltype(&nvcompBatchedLZ4DecompressAsync);

// Callers pass statuses as int32_t arrays (damacy/detail/gpu_plan.h).
static_assert(sizeof(nvcompStatus_t) == 4, "nvcompStatus_t is not 4 bytes");

constexpr const char* kSoname = "libnvcomp.so.5";
constexpr const char* kFix =
    "fix: `pip install nvidia-libnvcomp-cu13` (nvCOMP 5.x for CUDA 13) into the Python "
    "environment, or set DAMACY_NVCOMP_LIBRARY to the path of libnvcomp.so.5";

// Layout: written once under `mu` by a successful load, read-only afterwards. `loaded` is
// only read under `mu`, and the function pointers are only used after a call that took
// `mu` and saw `loaded` (available() / load()), so every reader happens-after the writer.
struct Library {
  std::mutex mu;
  bool attempted = false;
  bool loaded = false;
  std::string why;   // accumulated reasons while not loaded
  std::string path;  // resolved file once loaded
  uint32_t version = 0;
  void* handle = nullptr;
  ZstdAlignFn zstd_align = nullptr;
  ZstdTempFn zstd_temp = nullptr;
  ZstdDecompressFn zstd_decompress = nullptr;
  Lz4AlignFn lz4_align = nullptr;
  Lz4TempFn lz4_temp = nullptr;
  Lz4DecompressFn lz4_decompress = nullptr;
};

Library& lib() {
  static Library l;  // never destroyed before exit handlers that might still use it
  return l;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string join(const std::string& dir, std::string_view leaf) {
  if (dir.empty() || dir.back() == '/') return dir + std::string(leaf);
  return dir + "/" + std::string(leaf);
}

template <class F>
bool bind(void* h, const char* name, F* out, std::string* why) {
  dlerror();
  void* sym = dlsym(h, name);
  if (sym == nullptr) {
    const char* e = dlerror();
    *why += std::string("  missing symbol ") + name + (e ? std::string(": ") + e : "") + "\n";
    return false;
  }
  *out = reinterpret_cast<F>(sym);
  return true;
}

// Tries one dlopen name/path; on success binds everything and checks the version. Called
// with `l.mu` held.
bool try_open(Library& l, const std::string& what) {
  dlerror();
  void* h = dlopen(what.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    l.why += "  " + what + ": " + (e ? e : "dlopen failed") + "\n";
    return false;
  }
  std::string why;
  GetPropertiesFn get_properties = nullptr;
  bool ok = bind(h, "nvcompGetProperties", &get_properties, &why);
  ok = bind(h, "nvcompBatchedZstdDecompressGetRequiredAlignments", &l.zstd_align, &why) && ok;
  ok = bind(h, "nvcompBatchedZstdDecompressGetTempSizeAsync", &l.zstd_temp, &why) && ok;
  ok = bind(h, "nvcompBatchedZstdDecompressAsync", &l.zstd_decompress, &why) && ok;
  ok = bind(h, "nvcompBatchedLZ4DecompressGetRequiredAlignments", &l.lz4_align, &why) && ok;
  ok = bind(h, "nvcompBatchedLZ4DecompressGetTempSizeAsync", &l.lz4_temp, &why) && ok;
  ok = bind(h, "nvcompBatchedLZ4DecompressAsync", &l.lz4_decompress, &why) && ok;
  uint32_t version = 0;
  if (ok) {
    nvcompProperties_t props{};
    if (get_properties(&props) != nvcompSuccess) {
      why += "  nvcompGetProperties failed\n";
      ok = false;
    } else {
      version = props.version;
      if (version / 1000 != NVCOMP_VER_MAJOR) {
        why += "  version " + std::to_string(version / 1000) + "." +
               std::to_string((version % 1000) / 100) + "." + std::to_string(version % 100) +
               " found, major " + std::to_string(NVCOMP_VER_MAJOR) + " required\n";
        ok = false;
      }
    }
  }
  std::string resolved = what;
  if (link_map* lm = nullptr; dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name &&
                              lm->l_name[0] != '\0') {
    resolved = lm->l_name;
  }
  if (!ok) {
    l.why += "  " + resolved + ": unusable\n" + why;
    l.zstd_align = nullptr;
    l.zstd_temp = nullptr;
    l.zstd_decompress = nullptr;
    l.lz4_align = nullptr;
    l.lz4_temp = nullptr;
    l.lz4_decompress = nullptr;
    dlclose(h);
    return false;
  }
  l.handle = h;
  l.path = resolved;
  l.version = version;
  l.loaded = true;
  l.why.clear();
  return true;
}

// The whole search (file comment, steps 1-3). Called with `l.mu` held.
void search(Library& l, const std::vector<std::string>& dirs) {
  l.attempted = true;
  l.why.clear();
  if (const char* env = std::getenv("DAMACY_NVCOMP_LIBRARY"); env && env[0] != '\0') {
    std::string p = env;
    if (is_dir(p)) p = join(p, kSoname);
    if (!try_open(l, p)) {
      l.why = "  DAMACY_NVCOMP_LIBRARY=" + std::string(env) + " is set but unusable (no fallback):\n" + l.why;
    }
    return;  // an explicit choice is never silently replaced by another copy
  }
  for (const std::string& d : dirs) {
    if (d.empty()) continue;
    for (std::string_view sub : {"lib64", "lib", "nvidia/libnvcomp/lib64", "nvidia/libnvcomp/lib"}) {
      const std::string p = join(join(d, sub), kSoname);
      if (is_file(p) && try_open(l, p)) return;
    }
  }
  if (!dirs.empty()) {
    l.why += "  no " + std::string(kSoname) + " under {lib64,lib,nvidia/libnvcomp/lib64," +
             "nvidia/libnvcomp/lib} of the " + std::to_string(dirs.size()) + " folder(s) given\n";
  }
  l.why += "  dlopen search (LD_LIBRARY_PATH, rpath, ld.so.cache):\n";
  if (try_open(l, kSoname)) return;
  try_open(l, "libnvcomp.so");
}

}  // namespace

bool load(const std::vector<std::string>& search_dirs) {
  Library& l = lib();
  std::lock_guard<std::mutex> g(l.mu);
  if (!l.loaded) search(l, search_dirs);
  return l.loaded;
}

bool load_pathlist(const std::string& pathsep_joined) {
  std::vector<std::string> dirs;
  size_t start = 0;
  while (start <= pathsep_joined.size()) {
    size_t end = pathsep_joined.find(':', start);
    if (end == std::string::npos) end = pathsep_joined.size();
    if (end > start) dirs.push_back(pathsep_joined.substr(start, end - start));
    start = end + 1;
  }
  return load(dirs);
}

bool available() {
  Library& l = lib();
  std::lock_guard<std::mutex> g(l.mu);
  if (!l.attempted) search(l, {});
  return l.loaded;
}

std::string why_unavailable() {
  Library& l = lib();
  std::lock_guard<std::mutex> g(l.mu);
  if (!l.attempted) search(l, {});
  if (l.loaded) return {};
  return "nvCOMP (libnvcomp.so.5) is not available:\n" + l.why + kFix;
}

std::string library_path() {
  Library& l = lib();
  std::lock_guard<std::mutex> g(l.mu);
  return l.loaded ? l.path : std::string();
}

uint32_t library_version() {
  Library& l = lib();
  std::lock_guard<std::mutex> g(l.mu);
  return l.loaded ? l.version : 0;
}

nvcompStatus_t required_alignments(Codec codec, nvcompAlignmentRequirements_t* out) {
  if (!available() || out == nullptr) return nvcompErrorNotSupported;
  const Library& l = lib();
  switch (codec) {
    case Codec::Zstd:
      return l.zstd_align(nvcompBatchedZstdDecompressDefaultOpts, out);
    case Codec::Lz4:
      return l.lz4_align(nvcompBatchedLZ4DecompressDefaultOpts, out);
  }
  return nvcompErrorNotSupported;
}

nvcompStatus_t decompress_temp_bytes(Codec codec, size_t num_chunks,
                                     size_t max_uncompressed_chunk_bytes,
                                     size_t max_total_uncompressed_bytes, size_t* temp_bytes) {
  if (!available() || temp_bytes == nullptr) return nvcompErrorNotSupported;
  const Library& l = lib();
  switch (codec) {
    case Codec::Zstd:
      return l.zstd_temp(num_chunks, max_uncompressed_chunk_bytes,
                         nvcompBatchedZstdDecompressDefaultOpts, temp_bytes,
                         max_total_uncompressed_bytes);
    case Codec::Lz4:
      return l.lz4_temp(num_chunks, max_uncompressed_chunk_bytes,
                        nvcompBatchedLZ4DecompressDefaultOpts, temp_bytes,
                        max_total_uncompressed_bytes);
  }
  return nvcompErrorNotSupported;
}

nvcompStatus_t batched_decompress(Codec codec, const void* const* d_src_ptrs,
                                  const size_t* d_src_bytes,
                                  const size_t* d_dst_bytes_capacity, size_t* d_actual,
                                  void* const* d_dst_ptrs, size_t n, void* d_temp,
                                  size_t temp_bytes, nvcompStatus_t* d_statuses,
                                  cudaStream_t stream) {
  if (!available()) return nvcompErrorNotSupported;
  if (n == 0) return nvcompSuccess;
  const Library& l = lib();
  switch (codec) {
    case Codec::Zstd:
      return l.zstd_decompress(d_src_ptrs, d_src_bytes, d_dst_bytes_capacity, d_actual, n,
                               d_temp, temp_bytes, d_dst_ptrs,
                               nvcompBatchedZstdDecompressDefaultOpts, d_statuses, stream);
    case Codec::Lz4:
      return l.lz4_decompress(d_src_ptrs, d_src_bytes, d_dst_bytes_capacity, d_actual, n,
                              d_temp, temp_bytes, d_dst_ptrs,
                              nvcompBatchedLZ4DecompressDefaultOpts, d_statuses, stream);
  }
  return nvcompErrorNotSupported;
}

const char* status_name(nvcompStatus_t status) {
  switch (status) {
    case nvcompSuccess: return "nvcompSuccess";
    case nvcompErrorInvalidValue: return "nvcompErrorInvalidValue";
    case nvcompErrorNotSupported: return "nvcompErrorNotSupported";
    case nvcompErrorCannotDecompress: return "nvcompErrorCannotDecompress";
    case nvcompErrorBadChecksum: return "nvcompErrorBadChecksum";
    case nvcompErrorCannotVerifyChecksums: return "nvcompErrorCannotVerifyChecksums";
    case nvcompErrorOutputBufferTooSmall: return "nvcompErrorOutputBufferTooSmall";
    case nvcompErrorWrongHeaderLength: return "nvcompErrorWrongHeaderLength";
    case nvcompErrorAlignment: return "nvcompErrorAlignment";
    case nvcompErrorChunkSizeTooLarge: return "nvcompErrorChunkSizeTooLarge";
    case nvcompErrorCannotCompress: return "nvcompErrorCannotCompress";
    case nvcompErrorWrongInputLength: return "nvcompErrorWrongInputLength";
    case nvcompErrorBatchSizeTooLarge: return "nvcompErrorBatchSizeTooLarge";
    case nvcompErrorCudaError: return "nvcompErrorCudaError";
    case nvcompErrorInternal: return "nvcompErrorInternal";
  }
  return "nvcompError(unknown)";
}

const char* codec_name(Codec codec) {
  switch (codec) {
    case Codec::Zstd: return "zstd";
    case Codec::Lz4: return "lz4";
  }
  return "unknown";
}

}  // namespace damacy::nvcomp
