r"""A kernel launch as a value, so that what a launcher would run can be
inspected without running it: the ahead-of-time compilation test
(:obj:`tests/ops/test_triton_compile.py`) compiles exactly the
specialisations the launchers pick, from these."""
from typing import Any, Dict, List, NamedTuple, Tuple, TypeVar

#: Registers per thread that ptxas may use. Programs have 4 warps (128
#: threads), so 128 registers keep 4 programs (16 warps) per SM. Without a
#: limit ptxas picks its own, and spilled 4 to 16 bytes at 40 to 64
#: registers in variants with every flag on (the full compile matrix).
MAX_REGISTERS = 128


class Launch(NamedTuple):
    r"""The kernel, its grid, its positional arguments and its constexprs,
    as a launcher computes them from its op's arguments."""
    kernel: Any
    grid: Tuple[int, ...]
    args: Tuple[Any, ...]
    constexprs: Dict[str, Any]

    @property
    def kwargs(self) -> Dict[str, Any]:
        r"""The keyword arguments of the launch: the constexprs and the
        compile options."""
        return dict(self.constexprs, maxnreg=MAX_REGISTERS)

    def __call__(self) -> None:
        r"""Runs the kernel; an empty grid runs nothing."""
        if min(self.grid) > 0:
            self.kernel[self.grid](*self.args, **self.kwargs)


Outputs = TypeVar('Outputs')


def run(launches: List[Launch], outputs: Outputs) -> Outputs:
    r"""Runs a launcher's :obj:`launches` in order and returns the
    :obj:`outputs` they write (the pair a :obj:`*_launches` function
    returns)."""
    for launch in launches:
        launch()
    return outputs
