// Compiles a kernel's tier file once per SIMD tier of simd.h: a kernel source defines
// BRANCHY_TIER_FILE (its *_tier.inl, as a string) and includes this inside namespace branchy;
// the tier file then sees that tier's Vec, kLanes and operations, and BRANCHY_TIER set to the
// tier's target attribute. The tiers' functions are avx2::name and avx512::name on x86-64,
// neon::name on aarch64, local to the source file.
#if BRANCHY_X86
namespace avx2 {
namespace {
#define BRANCHY_TIER BRANCHY_AVX2
#include BRANCHY_TIER_FILE
#undef BRANCHY_TIER
}  // namespace
}  // namespace avx2

namespace avx512 {
namespace {
#define BRANCHY_TIER BRANCHY_AVX512
#include BRANCHY_TIER_FILE
#undef BRANCHY_TIER
}  // namespace
}  // namespace avx512
#endif

#if BRANCHY_ARM64
namespace neon {
namespace {
#define BRANCHY_TIER BRANCHY_NEON
#include BRANCHY_TIER_FILE
#undef BRANCHY_TIER
}  // namespace
}  // namespace neon
#endif
#undef BRANCHY_TIER_FILE
