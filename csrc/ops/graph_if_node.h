// CUDA graph IF nodes built by the extension itself, for a PyTorch whose CUDAGraph lacks
// begin_capture_to_if_node (the GPU engine's conditional mode then still runs on the device).
// Used between torch.cuda.graph's capture_begin and capture_end, on the capturing stream:
//
//   if_node_begin(pred, pool)   # pred: a bool CUDA tensor of one element, computed upstream
//   ... work captured into the IF body: runs at replay only where pred was true ...
//   if_node_end()
//
// Calls nest (a body may hold IF nodes). Built only with CUDA (module.cpp binds them then).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace branchy_ops {

// Appends to the graph the current stream is capturing: a kernel that sets a conditional handle
// from pred on the device, then an IF node on that handle; makes a new stream, capturing into
// the IF node's body, the current stream; routes the caching allocator's allocations on it to
// the graph's memory pool (pool_a, pool_b: the pair torch.cuda.graph_pool_handle() gives).
void if_node_begin(const at::Tensor& pred, int64_t pool_a, int64_t pool_b);

// Ends the innermost body's capture, routes allocations back to the enclosing capture, and
// makes the enclosing stream current again. Safe to call after a failure inside the body.
void if_node_end();

// The stream that captures the bodies at nesting depth `depth` (0: an IF node in the graph
// itself) on `device`, as a cudaStream_t cast to an integer: made on first use, kept for the
// process. Work warmed up on it before capture sets up what libraries keep per stream.
int64_t if_body_stream(int64_t device, int64_t depth);

// How many if_node_begin calls have no if_node_end yet on this thread.
int64_t if_node_depth();

}  // namespace branchy_ops
