// damacy::Pipeline::pop_batch and the parser of a batch's samples JSON.
//
// The samples come from Rust (`Batch::samples_json`, serde_json): the pipeline's own record of
// what it read, not a copy kept here, so the metadata cannot drift from the tensor. Format:
//   [{"uri": "<string>", "aabb": [[start, stop], ...]}, ...]
// The parser reads exactly that (whitespace and any key order allowed, other keys skipped) and
// nothing more general; it never allocates beyond the result.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "damacy/pipeline.h"

namespace damacy {
namespace {

class SamplesReader {
 public:
  explicit SamplesReader(std::string_view text) : s_(text) {}

  std::vector<Sample> samples() {
    std::vector<Sample> out;
    expect('[');
    if (!consume(']')) {
      do {
        out.push_back(sample());
      } while (consume(','));
      expect(']');
    }
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return out;
  }

 private:
  Sample sample() {
    Sample out;
    bool have_uri = false, have_aabb = false;
    expect('{');
    if (!consume('}')) {
      do {
        const std::string key = string();
        expect(':');
        if (key == "uri") {
          out.uri = string();
          have_uri = true;
        } else if (key == "aabb") {
          out.aabb = aabb();
          have_aabb = true;
        } else {
          skip_value();
        }
      } while (consume(','));
      expect('}');
    }
    if (!have_uri || !have_aabb) fail("a sample without \"uri\" or \"aabb\"");
    return out;
  }

  std::vector<std::pair<std::int64_t, std::int64_t>> aabb() {
    std::vector<std::pair<std::int64_t, std::int64_t>> out;
    expect('[');
    if (!consume(']')) {
      do {
        expect('[');
        const std::int64_t start = integer();
        expect(',');
        const std::int64_t stop = integer();
        expect(']');
        out.emplace_back(start, stop);
      } while (consume(','));
      expect(']');
    }
    return out;
  }

  std::int64_t integer() {
    ws();
    bool negative = consume_raw('-');
    if (i_ >= s_.size() || s_[i_] < '0' || s_[i_] > '9') fail("expected an integer");
    std::uint64_t v = 0;
    const std::uint64_t limit = negative ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      const auto d = static_cast<std::uint64_t>(s_[i_++] - '0');
      if (v > (limit - d) / 10) fail("integer out of range");
      v = v * 10 + d;
    }
    if (negative) return v == (std::uint64_t{1} << 63) ? std::numeric_limits<std::int64_t>::min()
                                                       : -static_cast<std::int64_t>(v);
    return static_cast<std::int64_t>(v);
  }

  std::string string() {
    ws();
    if (!consume_raw('"')) fail("expected a string");
    std::string out;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      const char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          std::uint32_t cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            if (!consume_raw('\\') || !consume_raw('u')) fail("lone surrogate");
            const std::uint32_t lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("lone surrogate");
          }
          utf8(cp, out);
          break;
        }
        default: fail("bad escape");
      }
    }
  }

  std::uint32_t hex4() {
    if (s_.size() - i_ < 4) fail("short \\u escape");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else fail("bad \\u escape");
    }
    return v;
  }

  static void utf8(std::uint32_t cp, std::string& out) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Any JSON value (for keys this reader does not know).
  void skip_value(int depth = 0) {
    if (depth > 64) fail("nested too deeply");
    ws();
    if (i_ >= s_.size()) fail("expected a value");
    const char c = s_[i_];
    if (c == '"') {
      (void)string();
    } else if (c == '[' || c == '{') {
      const char close = c == '[' ? ']' : '}';
      ++i_;
      if (consume(close)) return;
      do {
        if (c == '{') {
          (void)string();
          expect(':');
        }
        skip_value(depth + 1);
      } while (consume(','));
      expect(close);
    } else {  // number, true, false, null
      const std::size_t start = i_;
      while (i_ < s_.size() && std::string_view("+-.0123456789eEtrufalsn").find(s_[i_]) !=
                                   std::string_view::npos) {
        ++i_;
      }
      if (i_ == start) fail("expected a value");
    }
  }

  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool consume_raw(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool consume(char c) {
    ws();
    return consume_raw(c);
  }
  void expect(char c) {
    if (!consume(c)) fail(std::string("expected '") + c + "'");
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw InvalidArgument("batch samples JSON: " + what + " at byte " + std::to_string(i_));
  }

  std::string_view s_;
  std::size_t i_ = 0;
};

}  // namespace

std::vector<Sample> parse_samples_json(std::string_view json) {
  return SamplesReader(json).samples();
}

Batch Pipeline::pop_batch(double timeout_s) {
  BatchWithSamples b = pop_with_samples(timeout_s);
  return Batch{std::move(b.tensor), parse_samples_json(b.samples_json)};
}

}  // namespace damacy
