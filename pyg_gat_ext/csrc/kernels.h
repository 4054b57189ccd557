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

// Each takes the arguments of its schema in pyg_gat_ext/ops/_library.py.

// segment_softmax.cpp
std::tuple<at::Tensor, at::Tensor> segment_csr_cpu(const at::Tensor& index,
                                                   int64_t num_nodes);
at::Tensor segment_softmax_cpu(const at::Tensor& src,
                               const std::optional<at::Tensor>& index,
                               const std::optional<at::Tensor>& ptr,
                               const std::optional<at::Tensor>& perm,
                               int64_t num_nodes, int64_t dim);
at::Tensor segment_softmax_backward_cpu(const at::Tensor& out,
                                        const at::Tensor& grad_out,
                                        const std::optional<at::Tensor>& index,
                                        const std::optional<at::Tensor>& ptr,
                                        const std::optional<at::Tensor>& perm,
                                        int64_t num_nodes, int64_t dim);

// gat_attention.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_cpu(const at::Tensor& x, const at::Tensor& a_src,
                  const at::Tensor& a_dst,
                  const std::optional<at::Tensor>& edge_score,
                  const at::Tensor& rowptr, const at::Tensor& col,
                  const at::Tensor& csr_eid, const at::Tensor& colptr,
                  const at::Tensor& row, const at::Tensor& csc_eid,
                  int64_t num_loops, bool remove_self_loops,
                  double negative_slope, double dropout,
                  const std::optional<at::Tensor>& seed,
                  bool return_attention_weights, bool save_stats);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gat_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x, const at::Tensor& a_src, const at::Tensor& a_dst,
    const std::optional<at::Tensor>& edge_score, const at::Tensor& lse,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csr_eid,
    const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_eid,
    int64_t num_loops, bool remove_self_loops, double negative_slope,
    double dropout, const std::optional<at::Tensor>& seed,
    const std::optional<at::Tensor>& out_sums,
    const std::optional<at::Tensor>& slope_sum,
    const std::optional<at::Tensor>& out);

// gatv2_attention.cpp
std::tuple<at::Tensor, at::Tensor, at::Tensor> gatv2_attention_cpu(
    const at::Tensor& x_src, const at::Tensor& x_dst, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_x, const at::Tensor& rowptr,
    const at::Tensor& col, const at::Tensor& csr_eid, const at::Tensor& colptr,
    const at::Tensor& row, const at::Tensor& csc_eid, int64_t num_loops,
    bool remove_self_loops, double negative_slope, double dropout,
    const std::optional<at::Tensor>& seed, bool return_attention_weights);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gatv2_attention_backward_cpu(
    const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_alpha,
    const at::Tensor& x_src, const at::Tensor& x_dst, const at::Tensor& att,
    const std::optional<at::Tensor>& edge_x, const at::Tensor& lse,
    const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& csr_eid,
    const at::Tensor& colptr, const at::Tensor& row, const at::Tensor& csc_eid,
    int64_t num_loops, bool remove_self_loops, double negative_slope,
    double dropout, const std::optional<at::Tensor>& seed);

// head_scores.cpp
at::Tensor head_scores_cpu(const at::Tensor& x, const at::Tensor& att);
std::tuple<at::Tensor, at::Tensor> head_scores_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& att);

// linear.cpp
at::Tensor linear_cpu(const at::Tensor& x, const at::Tensor& weight,
                      double max_density);
at::Tensor linear_weight_grad_cpu(const at::Tensor& grad, const at::Tensor& x,
                                  double max_density);

// dropout.cpp
at::Tensor dropout_cpu(const at::Tensor& x, double p,
                       const std::optional<at::Tensor>& seed);

}  // namespace pyg_gat_ext
