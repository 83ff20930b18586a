// Built instead of layers_dnnl.cpp where oneDNN is not installed: the own kernels serve every op.
#include "layer.h"

namespace branchy {

bool have_dnnl() { return false; }
std::string dnnl_version() { return ""; }
void set_dnnl_threads(int) {}
std::vector<std::unique_ptr<Layer>> dnnl_candidates(const Op&) { return {}; }

}  // namespace branchy
