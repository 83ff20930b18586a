#include "runtime/json.h"

#include <charconv>
#include <cmath>

namespace branchy::json {

bool valid_utf8(const uint8_t* data, size_t size, size_t* error_at) {
  size_t i = 0;
  while (i < size) {
    const uint8_t b = data[i];
    size_t extra = 0;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (b < 0x80) {
      extra = 0;
    } else if (b >= 0xC2 && b <= 0xDF) {
      extra = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
      extra = 2;
      if (b == 0xE0) lo = 0xA0;  // overlong
      if (b == 0xED) hi = 0x9F;  // UTF-16 surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      extra = 3;
      if (b == 0xF0) lo = 0x90;  // overlong
      if (b == 0xF4) hi = 0x8F;  // past U+10FFFF
    } else {
      *error_at = i;
      return false;
    }
    if (extra > size - i - 1) {
      *error_at = i;
      return false;
    }
    for (size_t k = 1; k <= extra; ++k) {
      const uint8_t c = data[i + k];
      const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
      if (!ok) {
        *error_at = i + k;
        return false;
      }
    }
    i += extra + 1;
  }
  return true;
}

namespace {

// Recursive descent over RFC 8259's grammar; it only checks, it builds nothing.
class Checker {
 public:
  explicit Checker(std::string_view text) : s_(text) {}

  bool object_document(std::string* error) {
    skip_space();
    if (peek() != '{') return fail("expected a JSON object", error);
    if (!value(0)) return fail(why_, error);
    skip_space();
    if (pos_ != s_.size()) return fail("unexpected text after the object", error);
    return true;
  }

 private:
  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }

  bool fail(const char* why, std::string* error) {
    *error = std::string(why) + " at byte " + std::to_string(pos_);
    return false;
  }

  bool bad(const char* why) {
    why_ = why;
    return false;
  }

  void skip_space() {
    while (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r') ++pos_;
  }

  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return bad("invalid literal");
    pos_ += word.size();
    return true;
  }

  bool digits() {
    if (peek() < '0' || peek() > '9') return bad("expected a digit");
    while (peek() >= '0' && peek() <= '9') ++pos_;
    return true;
  }

  bool number() {
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (!digits()) {
      return false;
    }
    if (peek() == '.') {
      ++pos_;
      if (!digits()) return false;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!digits()) return false;
    }
    return true;
  }

  static bool is_hex(int c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  }

  bool string() {
    ++pos_;  // the opening quote
    while (true) {
      const int c = peek();
      if (c < 0) return bad("unterminated string");
      if (c < 0x20) return bad("control character in a string");
      ++pos_;
      if (c == '"') return true;
      if (c != '\\') continue;
      const int e = peek();
      ++pos_;
      if (e == 'u') {
        for (int k = 0; k < 4; ++k, ++pos_) {
          if (!is_hex(peek())) return bad("bad \\u escape");
        }
      } else if (e < 0 || std::string_view("\"\\/bfnrt").find(char(e)) == std::string_view::npos) {
        return bad("bad escape");
      }
    }
  }

  // One container: '{' members '}' or '[' elements ']'.
  bool container(int depth, bool is_object) {
    const char close = is_object ? '}' : ']';
    ++pos_;
    skip_space();
    if (peek() == close) {
      ++pos_;
      return true;
    }
    while (true) {
      if (is_object) {
        skip_space();
        if (peek() != '"') return bad("expected a string key");
        if (!string()) return false;
        skip_space();
        if (peek() != ':') return bad("expected ':'");
        ++pos_;
      }
      if (!value(depth + 1)) return false;
      skip_space();
      if (peek() == close) {
        ++pos_;
        return true;
      }
      if (peek() != ',') return bad(is_object ? "expected ',' or '}'" : "expected ',' or ']'");
      ++pos_;
    }
  }

  bool value(int depth) {
    if (depth >= kMaxDepth) return bad("nested too deep");
    skip_space();
    switch (peek()) {
      case '{': return container(depth, true);
      case '[': return container(depth, false);
      case '"': return string();
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return number();
        return bad("expected a value");
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  const char* why_ = "";
};

}  // namespace

bool valid_object(std::string_view text, std::string* error) {
  return Checker(text).object_document(error);
}

void append_string(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += ch;
    }
  }
  out += '"';
}

void append_float(std::string& out, float value) {
  if (std::isnan(value)) {
    out += "\"nan\"";
  } else if (std::isinf(value)) {
    out += value > 0 ? "\"inf\"" : "\"-inf\"";
  } else {
    char buf[32];
    const auto result = std::to_chars(buf, buf + sizeof(buf), value);
    out.append(buf, result.ptr);
  }
}

}  // namespace branchy::json
