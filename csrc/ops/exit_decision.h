// Argument checks and output allocation shared by the CPU and CUDA implementations of the
// exit decision ops (schemas in exit_decision.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace branchy_ops {

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Checks logits are [batch, classes] floating point with classes >= 1; returns them with
// contiguous columns (a copy only when the columns are strided).
at::Tensor checked_logits(const at::Tensor& logits, const char* op);

// Checks a Python-number threshold is not NaN.
void check_threshold(double threshold, const char* op);

// Checks a tensor threshold has one element, a floating dtype and the logits' device; returns it
// as a one-element float32 tensor. The NaN check is left to the device code, which knows when
// it may read the value.
at::Tensor checked_threshold(const at::Tensor& threshold, const at::Tensor& logits, const char* op);

// (score float32 [B], leave bool [B], prediction int64 [B]) on the logits' device.
Outputs empty_outputs(const at::Tensor& logits);

}  // namespace branchy_ops
