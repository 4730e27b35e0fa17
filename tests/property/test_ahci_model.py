"""Random command-slot sequences on an AHCI port against a bytearray model disk.

Each example builds an HBA with one disk whose completions come back in a
random order (InlineIo with a hypothesis-drawn shuffle seed), brings the
port up, then runs a random sequence of steps:

* a non-queued command in a random slot: READ/WRITE DMA (EXT), READ/WRITE
  SECTORS (EXT), with random PRD splits, sometimes running past the end;
* a batch of queued commands (READ/WRITE FPDMA QUEUED) in random distinct
  slots over disjoint ranges, sometimes with one running past the end,
  completing in any order.

After each step every command has completed (its PxCI and PxSACT bits
clear) or the port reports a task-file error (PxIS.TFES with ERR in
PxTFD), which the test recovers from as AHCI 1.3.1 §6.2.2 says (clearing
ST, reading the NCQ Command Error log after a queued error).  Data read
must equal the model; failed commands change nothing outside their range.
No step may raise.  The bench (tests/unit/hw/ahci/ahcibench.py) states the
registers from the spec.
"""

import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "hw" / "ahci"))

from ahcibench import (  # noqa: E402
    CMD_ST, ERR, IS_TFES, READ_DMA, READ_DMA_EXT, READ_LOG_EXT, READ_SECTORS, READ_SECTORS_EXT,
    SECTOR, WRITE_DMA, WRITE_DMA_EXT, WRITE_SECTORS, WRITE_SECTORS_EXT, AhciBench, PxCI, PxCMD,
    PxSACT, PxSERR,
)

from drivebay.block.backend import MemoryBackend  # noqa: E402
from drivebay.block.io import InlineIo  # noqa: E402

SECTORS = 128
READS = (READ_DMA, READ_DMA_EXT, READ_SECTORS, READ_SECTORS_EXT)
WRITES = (WRITE_DMA, WRITE_DMA_EXT, WRITE_SECTORS, WRITE_SECTORS_EXT)
INITIAL = bytes((i * 13 + i // SECTOR) & 0xFF for i in range(SECTORS * SECTOR))

single = st.tuples(st.just("single"), st.sampled_from(READS + WRITES), st.integers(0, SECTORS + 8),
                   st.integers(1, 16), st.integers(0, 31), st.integers(1, 4), st.integers(0, 255))
queued = st.tuples(st.just("ncq"), st.lists(st.integers(0, 31), min_size=1, max_size=12, unique=True),
                   st.lists(st.booleans(), min_size=12, max_size=12), st.integers(1, 6),
                   st.booleans(), st.integers(0, 255))
steps = st.lists(st.one_of(single, queued), min_size=1, max_size=10)


def recover(b, queued_error):
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) & ~CMD_ST)
    assert b.px_read(0, PxCI) == 0 and b.px_read(0, PxSACT) == 0
    b.px_write(0, PxSERR, 0xFFFFFFFF)
    b.clear_irq(0)
    b.px_write(0, PxCMD, b.px_read(0, PxCMD) | CMD_ST)
    if queued_error:
        buf = b.buffer(512)
        cmd = b.command(0, 0, READ_LOG_EXT, lba=0x10, count=1, buffers=[(buf, 512)])
        assert not b.run(cmd) & IS_TFES


def failed(b):
    pxis = b.px_read(0, 0x10)
    if pxis & IS_TFES:
        assert b.tfd(0)[0] & ERR
        return True
    return False


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, seed=st.integers(0, 2**16))
def test_random_command_slots_against_a_model(steps, seed):
    model = bytearray(INITIAL)
    backend = MemoryBackend(bytearray(model), io=InlineIo(shuffle=seed))
    b = AhciBench(ports=1, drives={0: {"backend": backend}}).bring_up(0)
    scratch = b.alloc.next
    for step in steps:
        b.alloc.next = scratch                           # reuse guest memory between steps
        if step[0] == "single":
            _, command, lba, count, slot, pieces, fill = step
            if command in (READ_DMA, READ_SECTORS, WRITE_DMA, WRITE_SECTORS):
                count = min(count, 255)
            inside = lba + count <= SECTORS
            if command in WRITES:
                data = bytes((fill + i) & 0xFF for i in range(count * SECTOR))
                pxis, cmd = b.write(0, lba, data, slot=slot, command=command, pieces=pieces)
                if inside:
                    assert not failed(b)
                    model[lba * SECTOR:(lba + count) * SECTOR] = data
            else:
                data, pxis, cmd = b.read(0, lba, count, slot=slot, command=command, pieces=pieces)
                if inside:
                    assert not failed(b)
                    assert data == bytes(model[lba * SECTOR:(lba + count) * SECTOR])
            if not inside:
                assert failed(b)
                recover(b, False)
            else:
                assert b.px_read(0, PxCI) == 0
        else:
            _, tags, writes, count, past_end, fill = step
            width = SECTORS // len(tags)
            count = max(1, min(count, width))
            expected, written = {}, {}
            for i, tag in enumerate(tags):
                lba = i * width
                n = count + (SECTORS if past_end and i == len(tags) - 1 else 0)
                if writes[i]:
                    data = bytes((fill + tag + j) & 0xFF for j in range(n * SECTOR))
                    b.ncq(0, tag, lba, n, write=True, data=data, pieces=1 + tag % 3)
                    if lba + n <= SECTORS:
                        written[tag] = (lba, data)
                else:
                    _, buf = b.ncq(0, tag, lba, n, pieces=1 + tag % 3)
                    if lba + n <= SECTORS:
                        expected[tag] = (lba, n, buf)
            sact = b.px_read(0, PxSACT)
            if failed(b):
                assert past_end
                # Commands completed before the error are done; the others were
                # aborted and their data is undefined: make the model agree.
                for tag, (lba, data) in written.items():
                    if not sact >> tag & 1:
                        model[lba * SECTOR:lba * SECTOR + len(data)] = data
                    else:
                        model[lba * SECTOR:lba * SECTOR + len(data)] = backend.data[
                            lba * SECTOR:lba * SECTOR + len(data)]
                for tag, (lba, n, buf) in expected.items():
                    if not sact >> tag & 1:
                        assert b.memory.read(buf, n * SECTOR) == bytes(model[lba * SECTOR:(lba + n) * SECTOR])
                recover(b, True)
                continue
            assert sact == 0 and not past_end
            for lba, data in written.values():
                model[lba * SECTOR:lba * SECTOR + len(data)] = data
            for lba, n, buf in expected.values():
                assert b.memory.read(buf, n * SECTOR) == bytes(model[lba * SECTOR:(lba + n) * SECTOR])
        assert bytes(backend.data) == bytes(model)
