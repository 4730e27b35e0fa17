"""iSCSI PDUs (RFC 7143 section 11): the 48-byte Basic Header Segment, the
data segment, and the text segments of Login and Text negotiations.

Every PDU starts with the same 48 bytes::

    0   I bit (0x40) | opcode (6 bits)
    1   flags (F = 0x80, then opcode-specific bits)
    2-3 opcode-specific
    4   TotalAHSLength (4-byte words)
    5-7 DataSegmentLength (bytes, before padding to 4)
    8   LUN (or ISID/TSIH in a login)
    16  Initiator Task Tag
    20..44  seven opcode-specific 32-bit words

followed by the AHS, the data segment padded to a multiple of 4 bytes, and
(not negotiated here) header and data digests.  ``Pdu.words[i]`` is the
word at byte ``20 + 4 * i``; properties name the ones the initiator reads.

Reading is bounded: a header announcing a data segment longer than the
caller's limit is refused before anything is allocated for it.
"""

import socket
import struct

from drivebay.errors import ImageError

BHS_SIZE = 48
HEADER = struct.Struct(">BBBBB3s8sI7I")
assert HEADER.size == BHS_SIZE
MAX_AHS = 255 * 4                 # TotalAHSLength is one byte of 4-byte words
NO_TAG = 0xFFFFFFFF               # the reserved tag: "no task" / "no transfer tag"

IMMEDIATE = 0x40
FINAL = 0x80

# initiator opcodes
NOP_OUT = 0x00
SCSI_COMMAND = 0x01
TASK_MGMT = 0x02
LOGIN_REQUEST = 0x03
TEXT_REQUEST = 0x04
DATA_OUT = 0x05
LOGOUT_REQUEST = 0x06
SNACK = 0x10
# target opcodes
NOP_IN = 0x20
SCSI_RESPONSE = 0x21
TASK_MGMT_RESPONSE = 0x22
LOGIN_RESPONSE = 0x23
TEXT_RESPONSE = 0x24
DATA_IN = 0x25
LOGOUT_RESPONSE = 0x26
R2T = 0x31
ASYNC_MESSAGE = 0x32
REJECT = 0x3F

TARGET_OPCODES = {NOP_IN: "NOP-In", SCSI_RESPONSE: "SCSI Response",
                  TASK_MGMT_RESPONSE: "Task Management Response",
                  LOGIN_RESPONSE: "Login Response", TEXT_RESPONSE: "Text Response",
                  DATA_IN: "SCSI Data-In", LOGOUT_RESPONSE: "Logout Response",
                  R2T: "Ready To Transfer", ASYNC_MESSAGE: "Asynchronous Message",
                  REJECT: "Reject"}

# SCSI Command flags (byte 1)
CMD_READ = 0x40
CMD_WRITE = 0x20
ATTR_SIMPLE = 0x01
# Data-In flags (byte 1)
DATA_ACK = 0x40
DATA_OVERFLOW = 0x04
DATA_UNDERFLOW = 0x02
DATA_STATUS = 0x01
# SCSI Response flags (byte 1)
RESP_OVERFLOW = 0x04
RESP_UNDERFLOW = 0x02
# Login flags (byte 1): Transit, Continue, current and next stage
LOGIN_TRANSIT = 0x80
LOGIN_CONTINUE = 0x40
STAGE_SECURITY = 0
STAGE_OPERATIONAL = 1
STAGE_FULL_FEATURE = 3


class ProtocolError(ImageError):
    """The peer broke the iSCSI protocol, or the connection failed."""

    def __init__(self, message, errno_code=None):
        super().__init__(message)
        if errno_code is not None:
            self.errno = errno_code


def padded(n):
    return (n + 3) & ~3


class Pdu:
    """One received (or to be sent) PDU."""

    __slots__ = ("opcode", "immediate", "flags", "b2", "b3", "data_length", "lun", "itt",
                 "words", "ahs", "ahs_length", "data")

    def __init__(self, opcode, flags=0, b2=0, b3=0, lun=b"\0" * 8, itt=NO_TAG,
                 words=(0,) * 7, data=b"", immediate=False, ahs=b""):
        self.opcode = opcode
        self.immediate = immediate
        self.flags = flags
        self.b2 = b2
        self.b3 = b3
        self.lun = lun
        self.itt = itt
        self.words = tuple(words)
        self.ahs = ahs
        self.ahs_length = len(ahs)
        self.data = data
        self.data_length = len(data)

    @property
    def name(self):
        return TARGET_OPCODES.get(self.opcode, f"opcode {self.opcode:#04x}")

    # the words the target side fills in every response
    ttt = property(lambda self: self.words[0])           # 20: target transfer tag
    stat_sn = property(lambda self: self.words[1])       # 24
    exp_cmd_sn = property(lambda self: self.words[2])    # 28
    max_cmd_sn = property(lambda self: self.words[3])    # 32
    data_sn = property(lambda self: self.words[4])       # 36: DataSN / R2TSN
    buffer_offset = property(lambda self: self.words[5])  # 40
    residual = property(lambda self: self.words[6])      # 44 (R2T: desired length)
    final = property(lambda self: bool(self.flags & FINAL))

    def header(self, data_length=None):
        """The 48-byte BHS (``data_length`` when the data goes separately)."""
        n = self.data_length if data_length is None else data_length
        if n >= 1 << 24:
            raise ProtocolError(f"data segment of {n} bytes exceeds the 24-bit length field")
        return HEADER.pack((IMMEDIATE if self.immediate else 0) | self.opcode, self.flags,
                           self.b2, self.b3, len(self.ahs) // 4, n.to_bytes(3, "big"),
                           self.lun, self.itt, *self.words)

    def encode(self):
        """The whole PDU as bytes (header, AHS, padded data)."""
        return b"".join((self.header(), self.ahs, self.data,
                         bytes(padded(self.data_length) - self.data_length)))

    @classmethod
    def decode_header(cls, raw):
        """A Pdu from 48 header bytes; ``data`` is left empty, ``data_length``
        says how much follows (after ``len(ahs)`` bytes of AHS)."""
        if len(raw) != BHS_SIZE:
            raise ProtocolError(f"iSCSI header of {len(raw)} bytes (expected {BHS_SIZE})")
        op, flags, b2, b3, ahs_words, dsl, lun, itt, *words = HEADER.unpack_from(raw)
        pdu = cls.__new__(cls)
        pdu.opcode = op & 0x3F
        pdu.immediate = bool(op & IMMEDIATE)
        pdu.flags, pdu.b2, pdu.b3 = flags, b2, b3
        pdu.data_length = int.from_bytes(dsl, "big")
        pdu.lun, pdu.itt, pdu.words = lun, itt, tuple(words)
        pdu.ahs_length = ahs_words * 4   # recv_header reads the AHS itself
        pdu.ahs = b""
        pdu.data = b""
        return pdu

    def __repr__(self):
        return (f"<Pdu {self.name} itt={self.itt:#x} flags={self.flags:#04x} "
                f"data={self.data_length}>")


def encode_lun(lun):
    """An 8-byte LUN field: peripheral addressing below 256, flat space above
    (SAM-5 section 4.7)."""
    if not 0 <= lun < 16384:
        raise ValueError(f"LUN {lun} outside 0..16383")
    if lun < 256:
        return bytes([0, lun]) + bytes(6)
    return bytes([0x40 | (lun >> 8), lun & 0xFF]) + bytes(6)


# -- the socket side -------------------------------------------------------------------------

def recv_exact_into(sock, view):
    """Fill ``view`` from ``sock``; a closed connection is a ProtocolError."""
    got, n = 0, len(view)
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except socket.timeout:
            raise ProtocolError("iSCSI target did not answer in time", 110) from None
        except OSError as e:
            raise ProtocolError(f"iSCSI connection failed: {e.strerror or e}", e.errno) from None
        if k == 0:
            raise ProtocolError("iSCSI target closed the connection", 104)
        got += k


def recv_exact(sock, n):
    buf = bytearray(n)
    recv_exact_into(sock, memoryview(buf))
    return buf


def recv_header(sock, buf=None):
    """The next PDU's header and AHS (its data segment still unread);
    ``buf``, a 48-byte memoryview, is reused for the header bytes."""
    if buf is None:
        buf = memoryview(bytearray(BHS_SIZE))
    recv_exact_into(sock, buf)
    pdu = Pdu.decode_header(buf)
    if pdu.opcode not in TARGET_OPCODES:
        raise ProtocolError(f"iSCSI target sent an unknown opcode {pdu.opcode:#04x}")
    if pdu.ahs_length:
        pdu.ahs = bytes(recv_exact(sock, pdu.ahs_length))
    return pdu


def recv_data(sock, pdu, max_data, into=None):
    """Read ``pdu``'s data segment: into ``into`` (a view of exactly
    ``data_length`` bytes) or into ``pdu.data``.  A segment longer than
    ``max_data`` is refused before it is read or allocated."""
    n = pdu.data_length
    if n > max_data:
        raise ProtocolError(f"iSCSI {pdu.name} carries a {n}-byte data segment; "
                            f"at most {max_data} bytes were negotiated")
    if into is None:
        pdu.data = bytes(recv_exact(sock, n)) if n else b""
    elif n:
        recv_exact_into(sock, into)
    pad = padded(n) - n
    if pad:
        recv_exact(sock, pad)
    return pdu


def recv_pdu(sock, max_data):
    """One whole PDU (header, AHS and data)."""
    return recv_data(sock, recv_header(sock), max_data)


def send_pdu(sock, pdu, data=None):
    """Send ``pdu``; ``data`` (any buffer) replaces ``pdu.data`` without a copy."""
    if data is None:
        data = pdu.data
    n = len(data)
    parts = [pdu.header(n)]
    if pdu.ahs:
        parts.append(pdu.ahs)
    if n:
        parts.append(data)
        if padded(n) != n:
            parts.append(bytes(padded(n) - n))
    send_all(sock, parts)


def send_all(sock, parts):
    views = [memoryview(p).cast("B") for p in parts]
    try:
        while views:
            sent = sock.sendmsg(views)
            while sent:
                if sent >= len(views[0]):
                    sent -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][sent:]
                    sent = 0
    except socket.timeout:
        raise ProtocolError("iSCSI target stopped accepting data", 110) from None
    except OSError as e:
        raise ProtocolError(f"iSCSI connection failed: {e.strerror or e}", e.errno) from None


# -- text segments (RFC 7143 section 6) -------------------------------------------------------

MAX_KEY = 63
MAX_TEXT = 64 * 1024            # a whole negotiation's text, across continued PDUs


def encode_text(pairs):
    """``key=value\\0`` for each pair (a list keeps the order and repeats)."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    out = []
    for key, value in items:
        if not key or len(key) > MAX_KEY or "=" in key or "\0" in key:
            raise ValueError(f"invalid iSCSI key {key!r}")
        if "\0" in str(value):
            raise ValueError(f"iSCSI value of {key} contains a NUL byte")
        out.append(f"{key}={value}\0")
    return "".join(out).encode("utf-8")


def decode_text(raw, what="text"):
    """``[(key, value), ...]`` from a text segment (repeated keys kept in order)."""
    pairs = []
    for item in bytes(raw).split(b"\0"):
        if not item:
            continue
        key, sep, value = item.partition(b"=")
        if not sep or not key or len(key) > MAX_KEY:
            raise ProtocolError(f"iSCSI {what}: malformed key=value item {item[:80]!r}")
        try:
            pairs.append((key.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError:
            raise ProtocolError(f"iSCSI {what}: key=value item is not UTF-8: "
                                f"{item[:80]!r}") from None
    return pairs
