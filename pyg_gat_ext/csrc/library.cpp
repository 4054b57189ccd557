// The pyg_gat_ext_cpu operator library: every schema, and the CPU kernels
// (kernels.h) registered under them. torch.ops.load_library() of the built
// library runs these registrations; pyg_gat_ext/ops/_library.py calls the
// ops as torch.ops.pyg_gat_ext_cpu.<name>. Only this file includes
// torch/library.h.
#include <torch/library.h>

#include "kernels.h"

TORCH_LIBRARY(pyg_gat_ext_cpu, m) {
  m.def(
      "segment_softmax(Tensor src, Tensor ptr, Tensor? perm, int dim) -> "
      "Tensor");
  m.def(
      "segment_softmax_backward(Tensor out, Tensor grad_out, Tensor ptr, "
      "Tensor? perm, int dim) -> Tensor");
  m.def("segment_csr(Tensor index, int num_segments) -> (Tensor, Tensor)");
  m.def(
      "segment_softmax_index(Tensor src, Tensor index, int num_segments, "
      "int dim) -> Tensor");
  m.def(
      "segment_softmax_backward_index(Tensor out, Tensor grad_out, "
      "Tensor index, int num_segments, int dim) -> Tensor");
  m.def(
      "gat_attention(Tensor x, Tensor a_src, Tensor a_dst, "
      "Tensor? edge_score, Tensor ptr, Tensor src, Tensor eid, Tensor ptr_t, "
      "Tensor dst_t, Tensor eid_t, int num_loops, "
      "bool skip_self_loops, "
      "float negative_slope, float dropout, int seed0, int seed1, "
      "bool need_alpha) -> (Tensor, Tensor, Tensor)");
  m.def(
      "gat_attention_backward(Tensor grad_out, Tensor? grad_alpha, Tensor x, "
      "Tensor a_src, Tensor a_dst, Tensor? edge_score, Tensor lse, "
      "Tensor ptr, Tensor src, Tensor eid, Tensor ptr_t, Tensor dst_t, "
      "Tensor eid_t, int num_loops, bool skip_self_loops, "
      "float negative_slope, float dropout, int seed0, int seed1) -> "
      "(Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pyg_gat_ext_cpu, CPU, m) {
  using namespace pyg_gat_ext;
  m.impl("segment_softmax", &segment_softmax_cpu);
  m.impl("segment_softmax_backward", &segment_softmax_backward_cpu);
  m.impl("segment_csr", &segment_csr_cpu);
  m.impl("segment_softmax_index", &segment_softmax_index_cpu);
  m.impl("segment_softmax_backward_index",
         &segment_softmax_backward_index_cpu);
  m.impl("gat_attention", &gat_attention_cpu);
  m.impl("gat_attention_backward", &gat_attention_backward_cpu);
}
