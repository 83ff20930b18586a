// Built instead of layers_dnnl.cpp where oneDNN is not installed: the own kernels serve every op.
#include "layer.h"

namespace branchy {

bool have_dnnl() { return false; }
std::string dnnl_version() { return ""; }
int set_dnnl_threads(int threads) { return threads; }
std::vector<std::unique_ptr<Layer>> dnnl_conv2d(const Op&) { return {}; }
std::vector<std::unique_ptr<Layer>> dnnl_pool2d(const Op&) { return {}; }
std::vector<std::unique_ptr<Layer>> dnnl_lrn(const Op&) { return {}; }
std::vector<std::unique_ptr<Layer>> dnnl_linear(const Op&) { return {}; }
std::vector<std::unique_ptr<Layer>> dnnl_res_block(const Op&) { return {}; }

}  // namespace branchy
