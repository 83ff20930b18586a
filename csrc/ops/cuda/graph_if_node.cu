// CUDA graph IF nodes made with the CUDA runtime API (graph_if_node.h), the way PyTorch's own
// CUDAGraph::begin_capture_to_if_node makes them, for PyTorch versions without it.
//
// Each body is captured on a stream kept for its nesting depth (one per device and depth, made
// once, never destroyed): the engine warms a body's work up on that very stream before capture,
// so library handles and workspaces keyed by stream (cuBLAS, cuDNN) exist before the capture and
// none is first allocated inside an IF body.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/core/Tensor.h>
#include <cuda_runtime.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "ops/graph_if_node.h"

#if CUDART_VERSION < 12040
#error "conditional IF nodes need CUDA 12.4 or newer"
#endif

namespace {

using CaptureId = unsigned long long;

__global__ void set_condition_kernel(cudaGraphConditionalHandle handle, const bool* pred) {
  cudaGraphSetConditional(handle, *pred ? 1u : 0u);
}

// The CUDA 12 and 13 spellings of the capture calls that take edge data.
cudaError_t capture_info(cudaStream_t stream, cudaStreamCaptureStatus* status, CaptureId* id,
                         cudaGraph_t* graph, const cudaGraphNode_t** deps,
                         const cudaGraphEdgeData** edges, size_t* count) {
#if CUDART_VERSION >= 13000
  return cudaStreamGetCaptureInfo(stream, status, id, graph, deps, edges, count);
#else
  return cudaStreamGetCaptureInfo_v3(stream, status, id, graph, deps, edges, count);
#endif
}

cudaError_t add_node(cudaGraphNode_t* node, cudaGraph_t graph, const cudaGraphNode_t* deps,
                     const cudaGraphEdgeData* edges, size_t count, cudaGraphNodeParams* params) {
#if CUDART_VERSION >= 13000
  return cudaGraphAddNode(node, graph, deps, edges, count, params);
#else
  return cudaGraphAddNode_v2(node, graph, deps, edges, count, params);
#endif
}

cudaError_t set_dependencies(cudaStream_t stream, cudaGraphNode_t* node) {
#if CUDART_VERSION >= 13000
  return cudaStreamUpdateCaptureDependencies(stream, node, nullptr, 1, cudaStreamSetCaptureDependencies);
#else
  return cudaStreamUpdateCaptureDependencies_v2(stream, node, nullptr, 1,
                                                cudaStreamSetCaptureDependencies);
#endif
}

// The capture a stream belongs to: allocations on it go to the graph's pool.
std::function<bool(cudaStream_t)> captured_by(CaptureId id) {
  return [id](cudaStream_t stream) {
    cudaStreamCaptureStatus status;
    CaptureId stream_id = 0;
    return cudaStreamGetCaptureInfo(stream, &status, &stream_id) == cudaSuccess &&
           status == cudaStreamCaptureStatusActive && stream_id == id;
  };
}

struct Body {
  c10::DeviceIndex device;
  c10::cuda::MempoolId_t pool;
  c10::cuda::CUDAStream parent;
  CaptureId parent_id;
  cudaStream_t stream;
};

thread_local std::vector<Body> open_bodies;

std::mutex body_streams_mutex;
std::map<std::pair<c10::DeviceIndex, int64_t>, cudaStream_t> body_streams;

}  // namespace

namespace branchy_ops {

int64_t if_node_depth() { return static_cast<int64_t>(open_bodies.size()); }

int64_t if_body_stream(int64_t device, int64_t depth) {
  TORCH_CHECK(depth >= 0 && depth < 64, "if_body_stream: depth must be in [0, 64), got ", depth);
  TORCH_CHECK(device >= 0 && device < c10::cuda::device_count(),
              "if_body_stream: no CUDA device ", device);
  std::lock_guard<std::mutex> lock(body_streams_mutex);
  auto key = std::make_pair(static_cast<c10::DeviceIndex>(device), depth);
  auto found = body_streams.find(key);
  if (found != body_streams.end()) return reinterpret_cast<int64_t>(found->second);
  c10::cuda::CUDAGuard guard(key.first);
  cudaStream_t stream;
  C10_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  body_streams.emplace(key, stream);
  return reinterpret_cast<int64_t>(stream);
}

void if_node_begin(const at::Tensor& pred, int64_t pool_a, int64_t pool_b) {
  TORCH_CHECK(pred.is_cuda() && pred.scalar_type() == at::kBool && pred.numel() == 1,
              "if_node_begin: pred must be a bool CUDA tensor of one element, got ",
              pred.scalar_type(), " ", pred.sizes(), " on ", pred.device());
  const c10::DeviceIndex device = pred.device().index();
  c10::cuda::CUDAGuard guard(device);
  const c10::cuda::CUDAStream parent = c10::cuda::getCurrentCUDAStream(device);
  cudaStreamCaptureStatus status;
  CaptureId parent_id = 0;
  cudaGraph_t graph = nullptr;
  C10_CUDA_CHECK(capture_info(parent, &status, &parent_id, &graph, nullptr, nullptr, nullptr));
  TORCH_CHECK(status == cudaStreamCaptureStatusActive,
              "if_node_begin: the current stream of cuda:", static_cast<int>(device),
              " is not capturing a CUDA graph");

  // Default 0 at every launch: if nothing set the handle, the body does not run.
  cudaGraphConditionalHandle handle;
  C10_CUDA_CHECK(cudaGraphConditionalHandleCreate(&handle, graph, 0, cudaGraphCondAssignDefault));
  set_condition_kernel<<<1, 1, 0, parent>>>(handle, pred.const_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  const cudaGraphNode_t* deps = nullptr;
  const cudaGraphEdgeData* edges = nullptr;
  size_t count = 0;
  C10_CUDA_CHECK(capture_info(parent, &status, nullptr, nullptr, &deps, &edges, &count));
  cudaGraphNodeParams params{};
  params.type = cudaGraphNodeTypeConditional;
  params.conditional.handle = handle;
  params.conditional.type = cudaGraphCondTypeIf;
  params.conditional.size = 1;
  cudaGraphNode_t node;
  C10_CUDA_CHECK(add_node(&node, graph, deps, edges, count, &params));
  C10_CUDA_CHECK(set_dependencies(parent, &node));

  const int64_t depth = if_node_depth();
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(if_body_stream(device, depth));
  const c10::cuda::MempoolId_t pool{static_cast<c10::cuda::CaptureId_t>(pool_a),
                                    static_cast<c10::cuda::CaptureId_t>(pool_b)};
  // Throws if the pool is not the one being captured into: before the body's capture begins,
  // so that a failure leaves no stream capturing.
  c10::cuda::CUDACachingAllocator::endAllocateToPool(device, pool);
  // The enclosing capture's mode: the engine captures with thread_local (what PyTorch's
  // CUDA-graph trees use); a body must not be stricter or laxer than its graph.
  cudaError_t began = cudaStreamBeginCaptureToGraph(stream, params.conditional.phGraph_out[0],
                                                    nullptr, nullptr, 0,
                                                    cudaStreamCaptureModeThreadLocal);
  CaptureId body_id = 0;
  if (began == cudaSuccess) began = cudaStreamGetCaptureInfo(stream, &status, &body_id);
  if (began != cudaSuccess) {
    cudaGraph_t ignored;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(stream, &capturing) == cudaSuccess &&
        capturing != cudaStreamCaptureStatusNone) {
      (void)cudaStreamEndCapture(stream, &ignored);  // the stream is kept for later captures
    }
    c10::cuda::CUDACachingAllocator::beginAllocateToPool(device, pool, captured_by(parent_id));
    C10_CUDA_CHECK(began);
  }
  // Each begin takes a reference on the pool, which graph destruction releases once: like
  // PyTorch's own IF nodes, a conditional graph's pool is never freed before the process ends.
  c10::cuda::CUDACachingAllocator::beginAllocateToPool(device, pool, captured_by(body_id));
  open_bodies.push_back(Body{device, pool, parent, parent_id, stream});
  c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromExternal(stream, device));
}

void if_node_end() {
  TORCH_CHECK(!open_bodies.empty(), "if_node_end: no IF node body is being captured");
  const Body body = open_bodies.back();
  open_bodies.pop_back();
  cudaGraph_t captured = nullptr;  // the IF node's own body graph, owned by the node
  const cudaError_t ended = cudaStreamEndCapture(body.stream, &captured);
  // Restored whether or not the capture ended well: the enclosing capture goes on (or fails).
  c10::cuda::CUDACachingAllocator::endAllocateToPool(body.device, body.pool);
  c10::cuda::CUDACachingAllocator::beginAllocateToPool(body.device, body.pool,
                                                       captured_by(body.parent_id));
  c10::cuda::setCurrentCUDAStream(body.parent);
  C10_CUDA_CHECK(ended);
}

}  // namespace branchy_ops
