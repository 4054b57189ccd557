// The CPU kernels of the pyg_gat_ext operators (kernels.h), registered
// under the schemas that pyg_gat_ext/ops/_library.py defines once (its
// SCHEMAS): torch.ops.load_library() of the built library runs these
// registrations, after which the dispatcher sends CPU calls of
// torch.ops.pyg_gat_ext.<name> here. Only this file includes
// torch/library.h.
#include <torch/library.h>

#include "kernels.h"

TORCH_LIBRARY_IMPL(pyg_gat_ext, CPU, m) {
  using namespace pyg_gat_ext;
  m.impl("segment_csr", &segment_csr_cpu);
  m.impl("segment_softmax", &segment_softmax_cpu);
  m.impl("segment_softmax_backward", &segment_softmax_backward_cpu);
  m.impl("gat_attention", &gat_attention_cpu);
  m.impl("gat_attention_backward", &gat_attention_backward_cpu);
  m.impl("gatv2_attention", &gatv2_attention_cpu);
  m.impl("gatv2_attention_backward", &gatv2_attention_backward_cpu);
  m.impl("head_scores", &head_scores_cpu);
  m.impl("head_scores_backward", &head_scores_backward_cpu);
  m.impl("linear", &linear_cpu);
  m.impl("linear_weight_grad", &linear_weight_grad_cpu);
  m.impl("dropout", &dropout_cpu);
}
