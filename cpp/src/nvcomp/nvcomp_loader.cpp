// nvCOMP bound at run time; see nvcomp_loader.h for the search order and the contract, and
// nvcomp_api.h for the declarations (no nvCOMP header is included anywhere).
#include "nvcomp_loader.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>

#include <cstdlib>
#include <iterator>
#include <mutex>
#include <string_view>

namespace damacy::nvcomp {
namespace {

// The entry points of each major, by slot. A slot's function type is that major's (see
// nvcomp_api.h and the casts in the calls below); the table gives the exported name, or
// nullptr where the major has none.
enum Slot : size_t {
  kZstdAlign,
  kZstdTemp,
  kZstdDecompress,
  kLz4Align,
  kLz4Temp,
  kLz4Decompress,
  kStatusString,  // optional: nvcompGetStatusString (6.x only)
  kSlots,
};

struct MajorTable {
  uint32_t major;
  const char* soname;
  const char* names[kSlots];
  bool optional[kSlots];
};

// Newest first, as kSupportedMajors (the search order).
constexpr MajorTable kTables[] = {
    {6,
     "libnvcomp.so.6",
     {"nvcompBatchedZstdDecompressGetRequiredAlignments", "nvcompBatchedZstdDecompressGetTempSize",
      "nvcompBatchedZstdDecompressAsync", "nvcompBatchedLZ4DecompressGetRequiredAlignments",
      "nvcompBatchedLZ4DecompressGetTempSize", "nvcompBatchedLZ4DecompressAsync",
      "nvcompGetStatusString"},
     {false, false, false, false, false, false, true}},
    {5,
     "libnvcomp.so.5",
     {"nvcompBatchedZstdDecompressGetRequiredAlignments",
      "nvcompBatchedZstdDecompressGetTempSizeAsync", "nvcompBatchedZstdDecompressAsync",
      "nvcompBatchedLZ4DecompressGetRequiredAlignments",
      "nvcompBatchedLZ4DecompressGetTempSizeAsync", "nvcompBatchedLZ4DecompressAsync", nullptr},
     {false, false, false, false, false, false, true}},
};
static_assert(std::size(kTables) == std::size(kSupportedMajors));

const MajorTable* table_for(uint32_t major) {
  for (const MajorTable& t : kTables) {
    if (t.major == major) return &t;
  }
  return nullptr;
}

// Callers pass statuses as int32_t arrays (damacy/detail/gpu_plan.h).
static_assert(sizeof(Status) == 4, "nvcompStatus_t is not 4 bytes");

constexpr const char* kSonames = "libnvcomp.so.6 or libnvcomp.so.5";
constexpr const char* kFix =
    "fix: `pip install nvidia-libnvcomp-cu13` (nvCOMP 6.x or 5.x for CUDA 13) into the Python "
    "environment, or set DAMACY_NVCOMP_LIBRARY to the path of libnvcomp.so.6 or libnvcomp.so.5";

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
  uint32_t major = 0;  // 5 or 6 once loaded: which major's function types `sym` holds
  void* handle = nullptr;
  void* sym[kSlots] = {};
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

void* find_symbol(void* h, const char* name, std::string* why) {
  dlerror();
  void* sym = dlsym(h, name);
  if (sym == nullptr && why != nullptr) {
    const char* e = dlerror();
    *why += std::string("  missing symbol ") + name + (e ? std::string(": ") + e : "") + "\n";
  }
  return sym;
}

std::string version_string(uint32_t v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 100) + "." +
         std::to_string(v % 100);
}

// Tries one dlopen name/path: asks the library its version, picks that major's table and
// binds every entry point of it. Called with `l.mu` held.
bool try_open(Library& l, const std::string& what) {
  dlerror();
  void* h = dlopen(what.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) {
    const char* e = dlerror();
    l.why += "  " + what + ": " + (e ? e : "dlopen failed") + "\n";
    return false;
  }
  std::string resolved = what;
  if (link_map* lm = nullptr; dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name &&
                              lm->l_name[0] != '\0') {
    resolved = lm->l_name;
  }
  std::string why;
  uint32_t version = 0;
  const MajorTable* table = nullptr;
  void* sym[kSlots] = {};
  if (void* gp = find_symbol(h, "nvcompGetProperties", &why)) {
    api::Properties props{};
    if (reinterpret_cast<api::GetPropertiesFn>(gp)(&props) != Status::Success) {
      why += "  nvcompGetProperties failed\n";
    } else {
      version = props.version;
      table = table_for(version / 1000);
      if (table == nullptr) {
        why += "  version " + version_string(version) + " found; damacy binds majors 6 and 5\n";
      }
    }
  }
  bool ok = table != nullptr;
  if (ok) {
    for (size_t s = 0; s < kSlots; ++s) {
      if (table->names[s] == nullptr) continue;
      sym[s] = find_symbol(h, table->names[s], table->optional[s] ? nullptr : &why);
      if (sym[s] == nullptr && !table->optional[s]) ok = false;
    }
  }
  if (!ok) {
    l.why += "  " + resolved + ": unusable\n" + why;
    dlclose(h);
    return false;
  }
  l.handle = h;
  l.path = resolved;
  l.version = version;
  l.major = table->major;
  for (size_t s = 0; s < kSlots; ++s) l.sym[s] = sym[s];
  l.loaded = true;
  l.why.clear();
  return true;
}

// The whole search (header comment, steps 1-3). Called with `l.mu` held.
void search(Library& l, const std::vector<std::string>& dirs) {
  l.attempted = true;
  l.why.clear();
  if (const char* env = std::getenv("DAMACY_NVCOMP_LIBRARY"); env && env[0] != '\0') {
    const std::string p = env;
    bool ok = false;
    if (is_dir(p)) {
      bool any = false;
      for (const MajorTable& t : kTables) {
        const std::string f = join(p, t.soname);
        if (!is_file(f)) continue;
        any = true;
        if ((ok = try_open(l, f))) break;
      }
      if (!any) l.why += "  no " + std::string(kSonames) + " in that folder\n";
    } else {
      ok = try_open(l, p);
    }
    if (!ok) {
      l.why = "  DAMACY_NVCOMP_LIBRARY=" + p + " is set but unusable (no fallback):\n" + l.why;
    }
    return;  // an explicit choice is never silently replaced by another copy
  }
  for (const std::string& d : dirs) {
    if (d.empty()) continue;
    for (std::string_view sub : {"lib64", "lib", "nvidia/libnvcomp/lib64", "nvidia/libnvcomp/lib"}) {
      for (const MajorTable& t : kTables) {
        const std::string p = join(join(d, sub), t.soname);
        if (is_file(p) && try_open(l, p)) return;
      }
    }
  }
  if (!dirs.empty()) {
    l.why += "  no usable " + std::string(kSonames) + " under {lib64,lib,nvidia/libnvcomp/lib64," +
             "nvidia/libnvcomp/lib} of the " + std::to_string(dirs.size()) + " folder(s) given\n";
  }
  l.why += "  dlopen search (LD_LIBRARY_PATH, rpath, ld.so.cache):\n";
  for (const MajorTable& t : kTables) {
    if (try_open(l, t.soname)) return;
  }
  try_open(l, "libnvcomp.so");
}

// The bound entry point of `slot`, as the function type `F` of the loaded major.
template <class F>
F fn(const Library& l, Slot slot) {
  return reinterpret_cast<F>(l.sym[slot]);
}

// The options types of each major (nvcomp_api.h).
struct V5 {
  using Zstd = api::v5::ZstdDecompressOpts;
  using Lz4 = api::v5::Lz4DecompressOpts;
};
struct V6 {
  using Zstd = api::v6::ZstdDecompressOpts;
  using Lz4 = api::v6::Lz4DecompressOpts;
};

// GetRequiredAlignments and DecompressAsync have one shape in both majors but for the
// options type: one template each, instantiated per major.
template <class Opts>
Status align_with(const Library& l, Slot slot, Alignments* out) {
  return fn<api::AlignFn<Opts>>(l, slot)(api::default_opts<Opts>(), out);
}

template <class M>
Status align_major(const Library& l, Codec codec, Alignments* out) {
  switch (codec) {
    case Codec::Zstd: return align_with<typename M::Zstd>(l, kZstdAlign, out);
    case Codec::Lz4: return align_with<typename M::Lz4>(l, kLz4Align, out);
  }
  return Status::ErrorNotSupported;
}

struct DecompressCall {
  const void* const* d_src_ptrs;
  const size_t* d_src_bytes;
  const size_t* d_dst_bytes_capacity;
  size_t* d_actual;
  void* const* d_dst_ptrs;
  size_t n;
  void* d_temp;
  size_t temp_bytes;
  Status* d_statuses;
  cudaStream_t stream;
};

template <class Opts>
Status decompress_with(const Library& l, Slot slot, const DecompressCall& c) {
  return fn<api::DecompressFn<Opts>>(l, slot)(c.d_src_ptrs, c.d_src_bytes, c.d_dst_bytes_capacity,
                                              c.d_actual, c.n, c.d_temp, c.temp_bytes,
                                              c.d_dst_ptrs, api::default_opts<Opts>(),
                                              c.d_statuses, c.stream);
}

template <class M>
Status decompress_major(const Library& l, Codec codec, const DecompressCall& c) {
  switch (codec) {
    case Codec::Zstd: return decompress_with<typename M::Zstd>(l, kZstdDecompress, c);
    case Codec::Lz4: return decompress_with<typename M::Lz4>(l, kLz4Decompress, c);
  }
  return Status::ErrorNotSupported;
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
  return "nvCOMP (" + std::string(kSonames) + ") is not available:\n" + l.why + kFix;
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

uint32_t library_major() {
  Library& l = lib();
  std::lock_guard<std::mutex> g(l.mu);
  return l.loaded ? l.major : 0;
}

Status required_alignments(Codec codec, Alignments* out) {
  if (!available() || out == nullptr) return Status::ErrorNotSupported;
  const Library& l = lib();
  switch (l.major) {
    case 5: return align_major<V5>(l, codec, out);
    case 6: return align_major<V6>(l, codec, out);
  }
  return Status::ErrorNotSupported;
}

Status decompress_temp_bytes(Codec codec, size_t num_chunks, size_t max_uncompressed_chunk_bytes,
                             size_t max_total_uncompressed_bytes, size_t* temp_bytes,
                             cudaStream_t stream) {
  if (!available() || temp_bytes == nullptr) return Status::ErrorNotSupported;
  const Library& l = lib();
  // The one call whose shape differs: 5.x ...GetTempSizeAsync has no stream, 6.x
  // ...GetTempSize takes one (nvcomp_api.h).
  switch (l.major) {
    case 5:
      switch (codec) {
        case Codec::Zstd:
          return fn<api::v5::TempSizeFn<V5::Zstd>>(l, kZstdTemp)(
              num_chunks, max_uncompressed_chunk_bytes, api::default_opts<V5::Zstd>(), temp_bytes,
              max_total_uncompressed_bytes);
        case Codec::Lz4:
          return fn<api::v5::TempSizeFn<V5::Lz4>>(l, kLz4Temp)(
              num_chunks, max_uncompressed_chunk_bytes, api::default_opts<V5::Lz4>(), temp_bytes,
              max_total_uncompressed_bytes);
      }
      break;
    case 6:
      switch (codec) {
        case Codec::Zstd:
          return fn<api::v6::TempSizeFn<V6::Zstd>>(l, kZstdTemp)(
              num_chunks, max_uncompressed_chunk_bytes, api::default_opts<V6::Zstd>(), temp_bytes,
              max_total_uncompressed_bytes, stream);
        case Codec::Lz4:
          return fn<api::v6::TempSizeFn<V6::Lz4>>(l, kLz4Temp)(
              num_chunks, max_uncompressed_chunk_bytes, api::default_opts<V6::Lz4>(), temp_bytes,
              max_total_uncompressed_bytes, stream);
      }
      break;
  }
  return Status::ErrorNotSupported;
}

Status batched_decompress(Codec codec, const void* const* d_src_ptrs, const size_t* d_src_bytes,
                          const size_t* d_dst_bytes_capacity, size_t* d_actual,
                          void* const* d_dst_ptrs, size_t n, void* d_temp, size_t temp_bytes,
                          Status* d_statuses, cudaStream_t stream) {
  if (!available()) return Status::ErrorNotSupported;
  if (n == 0) return Status::Success;
  const Library& l = lib();
  const DecompressCall c{d_src_ptrs, d_src_bytes, d_dst_bytes_capacity, d_actual, d_dst_ptrs,
                         n,          d_temp,      temp_bytes,           d_statuses, stream};
  switch (l.major) {
    case 5: return decompress_major<V5>(l, codec, c);
    case 6: return decompress_major<V6>(l, codec, c);
  }
  return Status::ErrorNotSupported;
}

const char* status_name(Status status) {
  switch (status) {
    case Status::Success: return "nvcompSuccess";
    case Status::ErrorInvalidValue: return "nvcompErrorInvalidValue";
    case Status::ErrorNotSupported: return "nvcompErrorNotSupported";
    case Status::ErrorCannotDecompress: return "nvcompErrorCannotDecompress";
    case Status::ErrorBadChecksum: return "nvcompErrorBadChecksum";
    case Status::ErrorCannotVerifyChecksums: return "nvcompErrorCannotVerifyChecksums";
    case Status::ErrorOutputBufferTooSmall: return "nvcompErrorOutputBufferTooSmall";
    case Status::ErrorWrongHeaderLength: return "nvcompErrorWrongHeaderLength";
    case Status::ErrorAlignment: return "nvcompErrorAlignment";
    case Status::ErrorChunkSizeTooLarge: return "nvcompErrorChunkSizeTooLarge";
    case Status::ErrorCannotCompress: return "nvcompErrorCannotCompress";
    case Status::ErrorWrongInputLength: return "nvcompErrorWrongInputLength";
    case Status::ErrorBatchSizeTooLarge: return "nvcompErrorBatchSizeTooLarge";
    case Status::ErrorSubChunkCountTooLarge: return "nvcompErrorSubChunkCountTooLarge";
    case Status::ErrorSubChunkCountTooSmall: return "nvcompErrorSubChunkCountTooSmall";
    case Status::ErrorOutputBufferAlignmentTooSmall: return "nvcompErrorOutputBufferAlignmentTooSmall";
    case Status::ErrorCudaError: return "nvcompErrorCudaError";
    case Status::ErrorInternal: return "nvcompErrorInternal";
  }
  // A code newer than this file: ask the library (6.x) when it is loaded.
  Library& l = lib();
  void* s = nullptr;
  {
    std::lock_guard<std::mutex> g(l.mu);
    if (l.loaded) s = l.sym[kStatusString];
  }
  if (s != nullptr) {
    if (const char* name = reinterpret_cast<api::v6::GetStatusStringFn>(s)(status)) return name;
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
