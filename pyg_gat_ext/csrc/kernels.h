// The CPU kernels of pyg_gat_ext, as library.cpp registers them. Each is
// defined in its own translation unit, which includes only the ATen headers
// it needs (not torch/library.h, whose schema inference is heavy to
// compile): the kernel files build in parallel and quickly.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace pyg_gat_ext {

// segment_softmax.cpp
at::Tensor segment_softmax_cpu(const at::Tensor& src, const at::Tensor& ptr,
                               const std::optional<at::Tensor>& perm,
                               int64_t dim);
at::Tensor segment_softmax_backward_cpu(const at::Tensor& out,
                                        const at::Tensor& grad_out,
                                        const at::Tensor& ptr,
                                        const std::optional<at::Tensor>& perm,
                                        int64_t dim);
at::Tensor segment_softmax_index_cpu(const at::Tensor& src,
                                     const at::Tensor& index,
                                     int64_t num_segments, int64_t dim);
at::Tensor segment_softmax_backward_index_cpu(const at::Tensor& out,
                                              const at::Tensor& grad_out,
                                              const at::Tensor& index,
                                              int64_t num_segments,
                                              int64_t dim);
std::tuple<at::Tensor, at::Tensor> segment_csr_cpu(const at::Tensor& index,
                                                   int64_t num_segments);

// gat_attention.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor> gat_attention_cpu(
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& ptr,
    const at::Tensor& src, const at::Tensor& eid, const at::Tensor& ptr_t,
    const at::Tensor& dst_t, const at::Tensor& eid_t, int64_t num_loops,
    bool skip_self_loops, double negative_slope, double dropout, int64_t seed0,
    int64_t seed1, bool need_alpha);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& lse,
    const at::Tensor& ptr, const at::Tensor& src, const at::Tensor& eid,
    const at::Tensor& ptr_t, const at::Tensor& dst_t, const at::Tensor& eid_t,
    int64_t num_loops, bool skip_self_loops, double negative_slope,
    double dropout, int64_t seed0, int64_t seed1);

}  // namespace pyg_gat_ext
