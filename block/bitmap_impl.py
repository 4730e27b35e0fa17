"""The block-map and bitmap helpers the formats call: compiled when built.

``BACKEND`` names which implementation the public names bind.  Setting the
environment variable ``DRIVEBAY_PURE_PYTHON=1`` selects the reference
implementation (for debugging and for the two-backend tests).
"""

import os

from drivebay.block import bitmap as python

try:
    from drivebay.block import _bitmap as compiled
except ImportError:          # a source tree that was never built
    compiled = None

_impl = python if compiled is None or os.environ.get("DRIVEBAY_PURE_PYTHON") else compiled
BACKEND = "python" if _impl is python else "cython"

is_zero = _impl.is_zero
zero_blocks = _impl.zero_blocks
count_allocated = _impl.count_allocated
block_runs = _impl.block_runs
bit_runs = _impl.bit_runs
set_bits = _impl.set_bits
count_bits = _impl.count_bits
