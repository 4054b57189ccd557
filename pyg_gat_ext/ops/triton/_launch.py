r"""A kernel launch as a value, so that what a launcher would run can be
inspected without running it: the ahead-of-time compilation test
(:obj:`tests/ops/test_triton_compile.py`) compiles exactly the
specialisations the launchers pick, from these."""
from typing import Any, Dict, NamedTuple, Tuple


class Launch(NamedTuple):
    r"""The kernel, its grid, its positional arguments and its constexprs,
    as a launcher computes them from its op's arguments."""
    kernel: Any
    grid: Tuple[int, ...]
    args: Tuple[Any, ...]
    constexprs: Dict[str, Any]

    def __call__(self) -> None:
        r"""Runs the kernel; an empty grid runs nothing."""
        if min(self.grid) > 0:
            self.kernel[self.grid](*self.args, **self.constexprs)
