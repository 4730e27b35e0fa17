"""QEMU debug console at 0x402: writes are output, reads return 0xE9."""

from drivebay.hw.pc.debugcon import DebugCon


def test_output_and_readback(io, ports):
    out = []
    DebugCon(out.append).register(io)
    assert ports.inb(0x402) == 0xE9                # SeaBIOS keeps logging only on 0xE9
    for byte in b"ok\n":
        ports.outb(0x402, byte)
    ports.outw(0x402, 0x6968)                      # "hi", low byte first
    assert b"".join(out) == b"ok\nhi"
