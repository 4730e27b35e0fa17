"""iSCSI PDUs and the session against a scripted fake target: round trips,
text segments, CHAP, and hostile PDUs (oversize segments, unknown opcodes,
Data-In outside the buffer, a peer that goes silent, mangled responses)."""

import contextlib
import errno
import hashlib
import socket
import struct
import threading
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivebay.block import iscsi_pdu as P
from drivebay.block.iscsi import parse_sense, sense_errno
from drivebay.block.iscsi_pdu import Pdu, ProtocolError
from drivebay.block.iscsi_session import (LoginError, Negotiated, Session, chap_decode,
                                          chap_response, parse_address, sn_le, sn_lt)
from drivebay.errors import ImageError


# -- PDUs ---------------------------------------------------------------------------------------

def test_header_round_trip():
    pdu = Pdu(P.SCSI_COMMAND, P.FINAL | P.CMD_READ | P.ATTR_SIMPLE, lun=P.encode_lun(3),
              itt=0x1234, words=(4096, 7, 9, 0x28000000, 0x10, 0x80000, 0), data=b"abcde",
              immediate=True)
    raw = pdu.encode()
    assert len(raw) == 48 + 8                    # data padded to 4 bytes
    assert raw[0] == 0x41 and raw[1] == 0xC1 and raw[5:8] == b"\0\0\5"
    back = Pdu.decode_header(raw[:48])
    assert (back.opcode, back.immediate, back.flags, back.itt, back.words, back.data_length) == \
        (P.SCSI_COMMAND, True, 0xC1, 0x1234, pdu.words, 5)
    assert back.lun == bytes([0, 3, 0, 0, 0, 0, 0, 0])
    assert P.encode_lun(300) == bytes([0x41, 0x2C]) + bytes(6)


def test_recv_pdu_over_a_socket_pair():
    a, b = socket.socketpair()
    with a, b:
        rsp = Pdu(P.TEXT_RESPONSE, P.FINAL, itt=5, words=(P.NO_TAG, 10, 2, 9, 0, 0, 0),
                  data=P.encode_text([("TargetName", "iqn.x:y"), ("TargetAddress", "1.2.3.4,1")]))
        a.sendall(rsp.encode())
        got = P.recv_pdu(b, 8192)
        assert got.opcode == P.TEXT_RESPONSE and got.stat_sn == 10 and got.max_cmd_sn == 9
        assert P.decode_text(got.data) == [("TargetName", "iqn.x:y"),
                                           ("TargetAddress", "1.2.3.4,1")]


def test_text_segments():
    raw = P.encode_text({"A": "1", "B": "x=y"})
    assert raw == b"A=1\0B=x=y\0"
    assert P.decode_text(raw) == [("A", "1"), ("B", "x=y")]
    with pytest.raises(ProtocolError, match="malformed"):
        P.decode_text(b"novalue\0")
    with pytest.raises(ValueError):
        P.encode_text([("K", "a\0b")])


class CountingSocket:
    """A fake peer: serves ``raw`` and records the largest read asked for."""

    def __init__(self, raw):
        self.raw = memoryview(raw)
        self.largest = 0

    def recv_into(self, view, n):
        self.largest = max(self.largest, n)
        k = min(n, len(self.raw))
        view[:k] = self.raw[:k]
        self.raw = self.raw[k:]
        return k


def test_oversize_data_segment_is_refused_before_allocation():
    header = Pdu(P.DATA_IN, 0, itt=1).header(data_length=(1 << 24) - 1)
    peer = CountingSocket(header)
    tracemalloc.start()
    try:
        pdu = P.recv_header(peer)
        with pytest.raises(ProtocolError, match="16777215-byte data segment"):
            P.recv_data(peer, pdu, 8192)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20 and peer.largest == 48


def test_unknown_opcode_and_closed_connection():
    with pytest.raises(ProtocolError, match="unknown opcode 0x3e"):
        P.recv_header(CountingSocket(Pdu(0x3E).encode()))
    with pytest.raises(ProtocolError, match="closed the connection"):
        P.recv_header(CountingSocket(b"\x21" * 20))


# -- small pieces of the session --------------------------------------------------------

def test_serial_number_arithmetic():
    assert sn_lt(1, 2) and not sn_lt(2, 1) and sn_lt(0xFFFFFFFF, 0) and sn_le(5, 5)
    assert not sn_lt(0, 0x80000000 + 1)


def test_chap_values():
    assert chap_decode("0x0a0B", "CHAP_C") == b"\x0a\x0b"
    assert chap_decode("0bAAEC", "CHAP_C") == b"\x00\x01\x02"
    with pytest.raises(LoginError, match="CHAP_C"):
        chap_decode("1234", "CHAP_C")
    assert chap_response(7, b"pw", b"ch") == hashlib.md5(b"\x07pwch").digest()


def test_target_addresses():
    assert parse_address("10.0.0.5:3261,1", "t") == ("10.0.0.5", 3261)
    assert parse_address("host.example", "t") == ("host.example", 3260)
    assert parse_address("[fe80::2]:3262,7", "t") == ("fe80::2", 3262)
    for bad in (None, "", ":3260", "h:0", "h:port"):
        with pytest.raises(LoginError, match="TargetAddress"):
            parse_address(bad, "t")


def test_negotiated_values_are_checked():
    n = Negotiated()
    n.apply("MaxBurstLength", "65536")
    assert n.max_burst == 65536
    with pytest.raises(LoginError, match="MaxRecvDataSegmentLength=16"):
        n.apply("MaxRecvDataSegmentLength", "16")
    with pytest.raises(LoginError, match="CRC32C"):
        n.apply("HeaderDigest", "CRC32C")


def test_sense_mapping():
    fixed = bytearray(18)
    fixed[0], fixed[2], fixed[12], fixed[13] = 0x70, 0x07, 0x27, 0x00
    assert parse_sense(bytes(fixed)) == (7, 0x27, 0)
    assert sense_errno(7, 0x27, 0) == errno.EROFS
    assert sense_errno(7, 0x27, 0x07) == errno.ENOSPC      # space allocation failed
    assert sense_errno(3, 0x11, 0) == errno.EIO            # unrecovered read error
    assert parse_sense(bytes([0x72, 0x03, 0x11, 0x00])) == (3, 0x11, 0)
    assert parse_sense(b"") == (None, 0, 0)


# -- a scripted fake target ---------------------------------------------------------------

class FakeTarget:
    """Accepts one connection, logs it in (AuthMethod None) and then runs
    ``script(conn, command_pdu)`` for the first SCSI command."""

    def __init__(self, script):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.port = self.server.getsockname()[1]
        self.script = script
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        conn, _ = self.server.accept()
        self.conn = conn
        try:
            stat = 0
            while True:
                req = P.recv_data(conn, Pdu.decode_header(P.recv_exact(conn, 48)), 65536)
                if req.opcode != P.LOGIN_REQUEST:
                    break
                csg, nsg = (req.flags >> 2) & 3, req.flags & 3
                data = b"" if csg == 0 else P.encode_text([("MaxRecvDataSegmentLength", 8192)])
                rsp = Pdu(P.LOGIN_RESPONSE, P.LOGIN_TRANSIT | (csg << 2) | nsg,
                          lun=req.lun[:6] + (b"\0\1" if nsg == 3 else b"\0\0"), itt=req.itt,
                          words=(0, stat, req.words[1], req.words[1] + 8, 0, 0, 0), data=data)
                conn.sendall(rsp.encode())
                stat += 1
            self.script(conn, req)
        except (OSError, ProtocolError):
            pass

    def close(self):
        self.server.close()
        if hasattr(self, "conn"):
            self.conn.close()


@contextlib.contextmanager
def session_with(script, timeout=2.0):
    """A Session logged in to a FakeTarget running ``script``."""
    fake = FakeTarget(script)
    s = Session("127.0.0.1", fake.port, "iqn.fake:t", timeout=timeout)
    try:
        yield s
    finally:
        fake.close()
        s.close()


def data_in(cmd, offset, data, status=None):
    flags = P.FINAL | (P.DATA_STATUS if status is not None else 0)
    return Pdu(P.DATA_IN, flags, b3=status or 0, itt=cmd.itt,
               words=(P.NO_TAG, 1, cmd.words[1] + 1, cmd.words[1] + 8, 0, offset, 0),
               data=data).encode()


def test_fake_target_data_in_with_status():
    with session_with(lambda conn, cmd: conn.sendall(data_in(cmd, 0, b"x" * 16, status=0))) as s:
        buf = bytearray(16)
        r = s.execute(P.encode_lun(0), bytes([0x28] + [0] * 9), read_into=buf)
        assert r.status == 0 and buf == b"x" * 16


def test_data_in_outside_the_buffer_fails_the_session():
    with session_with(lambda conn, cmd: conn.sendall(data_in(cmd, 8, b"y" * 16, status=0))) as s:
        with pytest.raises(ProtocolError, match="outside the 16-byte transfer"):
            s.execute(P.encode_lun(0), bytes([0x28] + [0] * 9), read_into=bytearray(16))


def test_oversize_segment_from_the_target_fails_the_session():
    def script(conn, cmd):
        conn.sendall(Pdu(P.SCSI_RESPONSE, P.FINAL, itt=cmd.itt).header(data_length=1 << 23))
    with session_with(script) as s:
        with pytest.raises(ProtocolError, match="8388608-byte data segment"):
            s.execute(P.encode_lun(0), bytes(6))


def test_silent_target_times_out():
    with session_with(lambda conn, cmd: time.sleep(5), timeout=0.5) as s:
        started = time.monotonic()
        with pytest.raises(ProtocolError, match="no answer") as e:
            s.execute(P.encode_lun(0), bytes(6))
        assert e.value.errno == errno.ETIMEDOUT and time.monotonic() - started < 3


def test_check_condition_carries_sense():
    sense = bytes([0x70, 0, 0x03] + [0] * 9 + [0x11, 0x00] + [0] * 4)

    def script(conn, cmd):
        rsp = Pdu(P.SCSI_RESPONSE, P.FINAL, b3=2, itt=cmd.itt,
                  words=(0, 1, cmd.words[1] + 1, cmd.words[1] + 8, 0, 0, 0),
                  data=struct.pack(">H", len(sense)) + sense)
        conn.sendall(rsp.encode())
    with session_with(script) as s:
        r = s.execute(P.encode_lun(0), bytes(6))
        assert r.status == 2 and parse_sense(r.sense) == (3, 0x11, 0)


# -- whatever the target sends, an answer or an ImageError, never a hang ------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 63), st.integers(0, 255)), max_size=6),
       opcode=st.sampled_from([P.DATA_IN, P.SCSI_RESPONSE, P.R2T, P.NOP_IN, P.REJECT,
                               P.ASYNC_MESSAGE, P.LOGOUT_RESPONSE, 0x3E]),
       tail=st.binary(max_size=64))
def test_mangled_responses_end_in_an_answer_or_an_error(flips, opcode, tail):
    def script(conn, cmd):
        flags = P.FINAL | (P.DATA_STATUS if opcode == P.DATA_IN else 0)
        raw = bytearray(Pdu(opcode, flags, itt=cmd.itt,
                            words=(P.NO_TAG, 1, cmd.words[1] + 1, cmd.words[1] + 8, 0, 0, 0),
                            data=b"z" * 16).encode())
        for at, value in flips:
            if at < len(raw):
                raw[at] = value
        conn.sendall(bytes(raw) + tail)
        conn.close()                 # and then the connection ends
    started = time.monotonic()
    with session_with(script, timeout=1.0) as s:
        try:
            r = s.execute(P.encode_lun(0), bytes([0x28] + [0] * 9), read_into=bytearray(16))
            assert r.status in range(256)
        except ImageError as e:
            assert e.errno
    assert time.monotonic() - started < 5
