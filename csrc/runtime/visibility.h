// BRANCHY_API marks what libbranchy.so exports of the C++ API: the classes and functions that the
// installed headers (plan.h and what it includes) declare and the library defines. CMake builds the
// library with hidden visibility (CXX_VISIBILITY_PRESET hidden, VISIBILITY_INLINES_HIDDEN), so
// everything else, the runtime's internals and the libraries it uses (oneDNN), stays inside it:
// nothing of it clashes with an embedder's own copy, and the dynamic symbol table stays small.
// The C API (branchy.h) is exported by branchy_c.cpp. tests/install/run.sh checks the exports.
#pragma once

#define BRANCHY_API __attribute__((visibility("default")))
