// Ops over the channels of each pixel: mean (global average pooling), channel_affine (a
// BatchNorm that no convolution precedes), channel_shuffle and channel_slice (ShuffleNet),
// layer_norm (ConvNeXt).
#include <cmath>
#include <cstring>

#include "registry.h"

namespace branchy {
namespace {

// ---- mean: [C, H, W] -> [C, 1, 1] ----

std::vector<Expected> mean_check(const OpCheck& c, Op& op) {
  op.out = c.shape(op.in.c, 1, 1, "output");
  return {};
}

void mean(const Op& op, Layout layout, const float* in, float* out) {
  const size_t plane = size_t(op.in.h) * op.in.w, channels = size_t(op.in.c);
  if (layout == Layout::NCHW) {
    for (size_t c = 0; c < channels; ++c) {
      float sum = 0.0f;
      for (size_t i = 0; i < plane; ++i) sum += in[c * plane + i];
      out[c] = sum / float(plane);
    }
    return;
  }
  for (size_t c = 0; c < channels; ++c) out[c] = 0.0f;
  for (size_t p = 0; p < plane; ++p) {
    for (size_t c = 0; c < channels; ++c) out[c] += in[p * channels + c];
  }
  for (size_t c = 0; c < channels; ++c) out[c] /= float(plane);
}

void mean_reference(const Op& op, const float* const* ins, float* out) { mean(op, Layout::NCHW, ins[0], out); }

// ---- channel_affine: x * scale[c] + shift[c], then the activation ----

std::vector<Expected> affine_check(const OpCheck& c, Op& op) {
  c.activation(op, 0, 0);
  op.out = op.in;
  const Expected per_channel = OpCheck::product({{"C", op.in.c}});
  return {per_channel, per_channel};
}

void affine(const Op& op, Layout layout, const float* in, float* out) {
  const float* scale = op.tensors[0].data;
  const float* shift = op.tensors[1].data;
  const size_t plane = size_t(op.in.h) * op.in.w, channels = size_t(op.in.c);
  if (layout == Layout::NCHW) {
    for (size_t c = 0; c < channels; ++c) {
      const float s = scale[c], t = shift[c];
      for (size_t p = 0; p < plane; ++p) out[c * plane + p] = in[c * plane + p] * s + t;
    }
  } else {
    for (size_t p = 0; p < plane; ++p) {
      for (size_t c = 0; c < channels; ++c) out[p * channels + c] = in[p * channels + c] * scale[c] + shift[c];
    }
  }
  apply_act(op.act, op.act_lo, op.act_hi, out, plane * channels);
}

void affine_reference(const Op& op, const float* const* ins, float* out) { affine(op, Layout::NCHW, ins[0], out); }

// ---- channel_shuffle: [g, C / g, H, W] transposed to [C / g, g, H, W] ----

std::vector<Expected> shuffle_check(const OpCheck& c, Op& op) {
  op.groups = c.at_least(op.ints[0], 1, "groups");
  if (op.in.c % op.groups) c.fail("groups ", op.groups, " does not divide the input's ", op.in.c, " channels");
  op.out = op.in;
  return {};
}

void shuffle_reference(const Op& op, const float* const* ins, float* out) {
  const size_t plane = size_t(op.in.h) * op.in.w;
  const int per = op.in.c / op.groups;
  for (int g = 0; g < op.groups; ++g) {
    for (int j = 0; j < per; ++j) {
      std::memcpy(out + size_t(j * op.groups + g) * plane, ins[0] + size_t(g * per + j) * plane,
                  plane * sizeof(float));
    }
  }
}

// ---- channel_slice: channels [start, start + count) ----

std::vector<Expected> slice_check(const OpCheck& c, Op& op) {
  const int32_t start = c.at_least(op.ints[0], 0, "start");
  const int32_t count = c.at_least(op.ints[1], 1, "count");
  if (int64_t(start) + count > op.in.c) {
    c.fail("channels [", start, ", ", int64_t(start) + count, ") are past the input's ", op.in.c);
  }
  op.start = start;
  op.out = {count, op.in.h, op.in.w};
  return {};
}

void slice(const Op& op, Layout layout, const float* in, float* out) {
  const size_t plane = size_t(op.in.h) * op.in.w, count = size_t(op.out.c);
  if (layout == Layout::NCHW) {
    std::memcpy(out, in + size_t(op.start) * plane, count * plane * sizeof(float));
    return;
  }
  for (size_t p = 0; p < plane; ++p) {
    std::memcpy(out + p * count, in + p * size_t(op.in.c) + size_t(op.start), count * sizeof(float));
  }
}

void slice_reference(const Op& op, const float* const* ins, float* out) { slice(op, Layout::NCHW, ins[0], out); }

// ---- layer_norm over the channels of each pixel ----

std::vector<Expected> norm_check(const OpCheck& c, Op& op) {
  op.eps = op.floats[0];
  if (!(op.eps > 0.0f) || !std::isfinite(op.eps)) c.fail("eps is ", op.eps, ", expected finite and > 0");
  op.out = op.in;
  const Expected per_channel = OpCheck::product({{"C", op.in.c}});
  return {per_channel, per_channel};
}

void norm(const Op& op, Layout layout, const float* in, float* out) {
  const float* weight = op.tensors[0].data;
  const float* bias = op.tensors[1].data;
  const size_t plane = size_t(op.in.h) * op.in.w, channels = size_t(op.in.c);
  const size_t step = layout == Layout::NCHW ? plane : 1;
  for (size_t p = 0; p < plane; ++p) {
    const size_t base = layout == Layout::NCHW ? p : p * channels;
    double sum = 0.0, squares = 0.0;
    for (size_t c = 0; c < channels; ++c) sum += in[base + c * step];
    const double mu = sum / double(channels);
    for (size_t c = 0; c < channels; ++c) {
      const double d = in[base + c * step] - mu;
      squares += d * d;
    }
    const double inv = 1.0 / std::sqrt(squares / double(channels) + double(op.eps));
    for (size_t c = 0; c < channels; ++c) {
      const size_t i = base + c * step;
      out[i] = float((in[i] - mu) * inv) * weight[c] + bias[c];
    }
  }
}

void norm_reference(const Op& op, const float* const* ins, float* out) { norm(op, Layout::NCHW, ins[0], out); }

// ---- layers ----

using Fn = void (*)(const Op&, Layout, const float*, float*);

// One of the per-pixel ops above as a LayoutRun (one input).
template <Fn fn>
void run(const Op& op, Layout layout, const float* const* ins, float* out) {
  fn(op, layout, ins[0], out);
}

std::string what(const Op& op) {
  std::string s = std::string(op.name()) + " " + std::to_string(op.in.c) + " channels";
  if (op.act != Act::None) s += std::string(" +") + act_name(op.act);
  return s;
}

Layers shuffle_own(const Op& op) {
  Layers out;
  out.push_back(reference_layer(op, "plane copies"));
  return out;
}

}  // namespace

extern const OpDef kMean{
    "mean", 12, {}, {}, {}, 1, 1, "the average of each channel over H and W; [C, 1, 1]",
    mean_check, mean_reference, both_layouts<run<mean>, what>, no_dnnl,
};

extern const OpDef kChannelAffine{
    "channel_affine", 13, {"activation"}, {"activation_lo", "activation_hi"}, {"scale [C]", "shift [C]"}, 1, 1,
    "x * scale[c] + shift[c] (a BatchNorm with no convolution before it), then the activation; [C, H, W]",
    affine_check, affine_reference, both_layouts<run<affine>, what>, no_dnnl,
};

extern const OpDef kChannelShuffle{
    "channel_shuffle", 14, {"groups"}, {}, {}, 1, 1,
    "channels viewed as [groups, C / groups] and transposed: output channel j * groups + g is "
    "input channel g * (C / groups) + j; [C, H, W]",
    shuffle_check, shuffle_reference, shuffle_own, no_dnnl,
};

extern const OpDef kChannelSlice{
    "channel_slice", 16, {"start", "count"}, {}, {}, 1, 1,
    "channels start .. start + count - 1 of the input (a split or chunk); [count, H, W]",
    slice_check, slice_reference, both_layouts<run<slice>, what>, no_dnnl,
};

extern const OpDef kLayerNorm{
    "layer_norm", 15, {}, {"eps"}, {"weight [C]", "bias [C]"}, 1, 1,
    "at each pixel, (x - mean) / sqrt(var + eps) * weight[c] + bias[c] over the C channels "
    "(biased variance); [C, H, W]",
    norm_check, norm_reference, both_layouts<run<norm>, what>, no_dnnl,
};

}  // namespace branchy
