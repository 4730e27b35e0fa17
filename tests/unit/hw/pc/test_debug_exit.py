"""QEMU isa-debug-exit at 0x501-0x502: a write of V requests exit with V."""

from drivebay.hw.pc.debug_exit import DebugExit, qemu_exit_status


def test_write_requests_exit(io, ports):
    codes = []
    DebugExit(codes.append).register(io)
    ports.outb(0x501, 0x10)
    ports.outw(0x501, 0x0102)
    assert codes == [0x10, 0x0102]
    assert ports.inb(0x501) == 0xFF
    assert ports.inw(0x501) == 0xFFFF


def test_qemu_process_status():
    assert qemu_exit_status(0) == 1
    assert qemu_exit_status(0x10) == 0x21
