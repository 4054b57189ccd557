r"""Triton kernel of the counter-based dropout (see
:func:`pyg_gat_ext.ops._reference.dropout`): the mask of the attention
dropout's hash family, drawn per element, never stored."""
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from pyg_gat_ext.ops._reference import dropout_threshold, opmath, seed_words
from pyg_gat_ext.ops.triton._launch import Launch, run
from pyg_gat_ext.ops.triton.gat_attention import SEED_WORDS
from pyg_gat_ext.ops.triton.gat_attention import _dropout as _factor


@triton.jit(do_not_specialize=SEED_WORDS)
def _dropout_fwd(x_ptr, y_ptr, param_ptr, num_elements, k0: tl.int64,
                 k1: tl.int64, threshold, ACC: tl.constexpr,
                 BLOCK: tl.constexpr):
    r"""Grid :obj:`(cdiv(numel, BLOCK),)`: program :obj:`b` multiplies
    elements :obj:`b * BLOCK ...` by their dropout factor (as a
    :obj:`[BLOCK, 1]` tile: the hash of (element, head 0))."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = (offs < num_elements)[:, None]
    scale = tl.load(param_ptr).to(ACC)
    f = _factor(offs, tl.arange(0, 1), k0, k1, threshold, scale)
    x = tl.load(x_ptr + offs[:, None], mask=mask, other=0.0).to(ACC)
    tl.store(y_ptr + offs[:, None], (x * f).to(y_ptr.dtype.element_ty),
             mask=mask)


def dropout_launches(x: Tensor, p: float,
                     seed: Optional[Tensor]) -> Tuple[List[Launch], Tensor]:
    r"""The launch of :func:`_dropout_fwd` for the op's arguments (none when
    nothing is dropped), and the output it writes."""
    x = x.contiguous()
    if p <= 0.0 or seed is None:
        return [], x.clone()
    k0, k1 = seed_words(seed)
    acc = opmath(x.dtype)
    scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    params = torch.tensor([scale], dtype=acc, device=x.device)
    out = torch.empty_like(x)
    block = 1024
    launch = Launch(
        _dropout_fwd, (triton.cdiv(x.numel(), block), ),
        (x, out, params, x.numel(), k0, k1, dropout_threshold(p)),
        dict(ACC=tl.float64 if acc == torch.float64 else tl.float32,
             BLOCK=block))
    return [launch], out


def dropout(x: Tensor, p: float, seed: Optional[Tensor]) -> Tensor:
    r"""Launches :func:`_dropout_fwd`."""
    return run(*dropout_launches(x, p, seed))
