// The little JSON the model file needs: checking the metadata section (UTF-8, JSON syntax) before
// it is handed out, and writing the summary (escaped strings, round-trip floats).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace branchy::json {

// Deepest nesting valid_object() accepts: bounds the recursion a hostile file can cause.
constexpr int kMaxDepth = 64;

// True if the bytes are well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF); otherwise false with *error_at the offset of the first bad byte.
bool valid_utf8(const uint8_t* data, size_t size, size_t* error_at);

// True if `text` is one JSON object (RFC 8259) with optional surrounding whitespace, nested at most
// kMaxDepth deep; otherwise false with *error a short reason and its byte offset.
bool valid_object(std::string_view text, std::string* error);

// Appends `s` (valid UTF-8) as a JSON string literal, quotes and escapes included.
void append_string(std::string& out, std::string_view s);

// Appends the shortest decimal that reads back as the same float; +inf, -inf and NaN, which JSON
// cannot write as numbers, become the strings "inf", "-inf" and "nan".
void append_float(std::string& out, float value);

}  // namespace branchy::json
