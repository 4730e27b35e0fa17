"""Random chains against a bytearray model: writes, zero writes, new layers,
merges in both directions and reopen, for every differencing format.

The model is the disk the guest sees.  Whatever sequence of operations runs,
the chain must read exactly the model, and every image must check clean.
"""

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from drivebay.block.chain import open_chain
from drivebay.block.drivers import DRIVERS, open_image
from drivebay.block.merge import merge_into_parent, merge_parent_into_child

SIZE = 4 << 20
FORMATS = [d for d in DRIVERS if d.supports_backing]

offset = st.integers(0, SIZE - 1)
op = st.one_of(
    st.tuples(st.just("write"), offset, st.integers(1, 200_000), st.integers(1, 255)),
    st.tuples(st.just("zero"), offset, st.integers(1, 300_000)),
    st.tuples(st.just("snapshot")),
    st.tuples(st.just("merge_down")),
    st.tuples(st.just("merge_up")),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), ops=st.lists(op, max_size=12))
def test_chain_matches_model(tmp_path_factory, fmt, ops):
    folder = tmp_path_factory.mktemp("chain")
    model = bytearray(SIZE)
    layers, made = [folder / "l0"], 0
    fmt.create(layers[0], SIZE)
    chain = open_chain(layers[-1], writable=True)
    try:
        for step in ops:
            kind = step[0]
            if kind == "write":
                _, at, n, value = step
                n = min(n, SIZE - at)
                chain.write(at, bytes([value]) * n)
                model[at:at + n] = bytes([value]) * n
            elif kind == "zero":
                _, at, n = step
                n = min(n, SIZE - at)
                chain.write_zeroes(at, n)
                model[at:at + n] = bytes(n)
            elif kind == "snapshot":
                chain.close()
                made += 1
                new = folder / f"l{made}"
                with open_image(layers[-1]) as parent:
                    fmt.create(new, None, parent=parent)
                layers.append(new)
                chain = open_chain(new, writable=True)
            elif kind in ("merge_down", "merge_up") and len(layers) > 1:
                chain.close()
                if kind == "merge_down":
                    merge_into_parent(layers[-1])
                    os.unlink(layers.pop())
                else:
                    merge_parent_into_child(layers[-1])
                    os.unlink(layers.pop(-2))
                chain = open_chain(layers[-1], writable=True)
            elif kind == "reopen":
                chain.close()
                chain = open_chain(layers[-1], writable=True)
            assert chain.read(0, SIZE) == bytes(model), f"after {step}"
        assert len(chain.images) == len(layers)
    finally:
        chain.close()
    for layer in layers:
        with open_image(layer) as im:
            report = im.check()
            assert report.clean, (layer, report)
