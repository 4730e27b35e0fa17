"""An iSCSI session over one TCP connection (RFC 7143): login, SCSI commands,
discovery and logout, as an initiator.

Login.  The security stage offers ``AuthMethod=None`` or, with a user name,
``CHAP`` (RFC 1994 with MD5, ``CHAP_A=5``; RFC 7143 section 12.1.3): the
response is MD5(identifier, secret, challenge).  With a target secret too,
the initiator sends its own challenge and checks the target's answer
(mutual CHAP).  The operational stage declares how much the initiator
receives per PDU and proposes what the transfers may use; the target's
answers (MaxRecvDataSegmentLength, burst lengths, InitialR2T,
ImmediateData) bound every Data-Out this side sends.  Digests are None.

Full feature phase.  Any number of threads call ``execute`` at once.  Each
command gets an Initiator Task Tag and, in the order commands go out, a
CmdSN inside the window the target opens (up to MaxCmdSN).  The socket is
read by one thread at a time, the holder of the read role: a thread
waiting for its command takes the role when it is free and reads every PDU
that comes until its command ends (or has an R2T to answer), then wakes
another waiting command to take over.  A lone command is therefore sent
and answered on its own thread, with no hand-over between threads (a
dedicated reader thread costs two thread switches a command: best of runs,
4 KiB reads at QD1 on tgtd took 113 us against 86 us this way).  Data-In
goes straight into the issuing thread's buffer at its buffer offset
(checked against the command's length); a SCSI Response or a Data-In with
status ends the command; an R2T is answered by
the thread that issued the write, without the role; a NOP-In that asks for
an answer gets its NOP-Out from a short-lived thread.  While no command
waits, an idle thread looks at the socket every IDLE_POLL seconds for
NOP-Ins and the connection's end.  A connection that fails fails every
command waiting on it; a command the target leaves unanswered for
``timeout`` seconds fails and closes the connection (its state is unknown
after that).
"""

import base64
import binascii
import collections
import hashlib
import os
import secrets
import select
import socket
import struct
import threading
import time

from drivebay.block import iscsi_pdu as P
from drivebay.block.iscsi_pdu import NO_TAG, Pdu, ProtocolError
from drivebay.errors import ImageError

DEFAULT_PORT = 3260
DEFAULT_TIMEOUT = 30.0
INITIATOR_NAME = "iqn.2008-11.org.drivebay:initiator"
OUR_MAX_RECV = 256 * 1024          # MaxRecvDataSegmentLength we declare
WANT_MAX_BURST = 16 * 1024 * 1024 - 512
WANT_FIRST_BURST = 256 * 1024
LOGIN_MAX_DATA = 8192              # a login PDU's data segment (RFC 7143 11.12.7)
MAX_REDIRECTS = 4                  # login redirections followed
MAX_LOGIN_STEPS = 16               # PDUs exchanged per login stage before giving up
CHAP_MD5 = 5
IDLE_POLL = 0.2                    # seconds between the idle reader's looks at the socket
CHAP_CHALLENGE_BYTES = 16

LOGIN_STATUS = {
    0x0101: "target moved temporarily", 0x0102: "target moved permanently",
    0x0200: "initiator error", 0x0201: "authentication failed",
    0x0202: "not authorized to access the target", 0x0203: "target not found",
    0x0204: "target removed", 0x0205: "unsupported iSCSI version",
    0x0206: "too many connections", 0x0207: "missing parameter",
    0x0208: "cannot include the connection in the session",
    0x0209: "session type not supported", 0x020A: "session does not exist",
    0x020B: "invalid request during login", 0x0300: "target error",
    0x0301: "service unavailable", 0x0302: "target out of resources",
}
TARGET_DECLARES = {"MaxRecvDataSegmentLength", "TargetAlias", "TargetPortalGroupTag",
                   "TargetAddress"}     # declarative keys: nothing to answer
LOGIN_ERRNO = {0x0201: 13, 0x0202: 13, 0x0203: 2, 0x0204: 2}     # EACCES, ENOENT


class LoginError(ImageError):
    """The target refused the login, or the negotiation failed."""

    def __init__(self, message, errno_code=5):
        super().__init__(message)
        self.errno = errno_code


class Redirected(LoginError):
    """The target sent the login elsewhere (status class 1)."""

    def __init__(self, where, address):
        super().__init__(f"{where}: login redirected to {address!r}")
        self.host, self.port = parse_address(address, where)


def parse_address(address, where):
    """``(host, port)`` from a TargetAddress: ``host[:port][,tag]``, an IPv6
    host in brackets."""
    text = (address or "").partition(",")[0].strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = text.partition(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise LoginError(f"{where}: target gave an unusable TargetAddress {address!r}")
    return host, int(port) if port else DEFAULT_PORT


def sn_lt(a, b):
    """Serial number arithmetic on 32 bits (RFC 1982): a < b."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def sn_le(a, b):
    return a == b or sn_lt(a, b)


# -- CHAP (RFC 1994, MD5) ------------------------------------------------------------------

def chap_response(identifier, secret, challenge):
    return hashlib.md5(bytes([identifier]) + secret + challenge).digest()


def chap_decode(value, key):
    """A CHAP binary value: ``0x`` hex or ``0b`` base64 (RFC 7143 section 6.1)."""
    try:
        if value[:2] in ("0x", "0X"):
            return bytes.fromhex(value[2:])
        if value[:2] in ("0b", "0B"):
            return base64.b64decode(value[2:], validate=True)
    except (ValueError, binascii.Error):
        pass
    raise LoginError(f"iSCSI login: {key}={value[:40]!r} is neither 0x-hex nor 0b-base64")


def _yes(value):
    return value.strip().lower() == "yes"


class Negotiated:
    """The operational values in force after login (RFC 7143 defaults first)."""

    def __init__(self):
        self.max_xmit = 8192            # the target's MaxRecvDataSegmentLength
        self.max_burst = 262144
        self.first_burst = 65536
        self.initial_r2t = True
        self.immediate_data = True
        self.max_outstanding_r2t = 1

    def apply(self, key, value):
        def number(lo=512, hi=(1 << 24) - 1):
            try:
                n = int(value, 0)
            except ValueError:
                raise LoginError(f"iSCSI login: {key}={value!r} is not a number") from None
            if not lo <= n <= hi:
                raise LoginError(f"iSCSI login: {key}={n} outside {lo}..{hi}")
            return n
        if key == "MaxRecvDataSegmentLength":
            self.max_xmit = number()
        elif key == "MaxBurstLength":
            self.max_burst = number()
        elif key == "FirstBurstLength":
            self.first_burst = number()
        elif key == "InitialR2T":
            self.initial_r2t = _yes(value)
        elif key == "ImmediateData":
            self.immediate_data = _yes(value)
        elif key == "MaxOutstandingR2T":
            self.max_outstanding_r2t = number(1, 65535)
        elif key in ("HeaderDigest", "DataDigest") and value != "None":
            raise LoginError(f"iSCSI login: target chose {key}={value}; only None was offered")


class _Task:
    """One command (or NOP-Out, or Logout) waiting for the target."""

    __slots__ = ("itt", "view", "got", "r2ts", "wake", "done", "status", "sense", "residual",
                 "error", "response", "waiting")

    def __init__(self, itt, view=None):
        self.itt = itt
        self.view = view                 # where Data-In goes (None: no data expected)
        self.got = 0
        self.r2ts = collections.deque()
        self.wake = threading.Lock()     # held while nothing happened: see signal()
        self.wake.acquire()
        self.done = False
        self.status = 0
        self.sense = b""
        self.residual = 0                # positive: underflow; negative: overflow
        self.error = None
        self.response = None             # the PDU that ended it
        self.waiting = False             # its thread is in _wait, wanting the read role

    def signal(self):
        """Wake the issuing thread (a lock used as a binary semaphore: cheaper
        than an Event; a second signal before it wakes is one wake-up)."""
        try:
            self.wake.release()
        except RuntimeError:             # already signalled
            pass


class ScsiResult:
    __slots__ = ("status", "sense", "residual")

    def __init__(self, status, sense, residual):
        self.status, self.sense, self.residual = status, sense, residual


class Session:
    """Log in to ``target`` (None with ``discovery=True``) at ``host:port``."""

    def __init__(self, host, port=DEFAULT_PORT, target=None, user=None, password=None,
                 target_user=None, target_password=None, initiator_name=INITIATOR_NAME,
                 timeout=DEFAULT_TIMEOUT, discovery=False):
        if (user is None) != (password is None):
            raise LoginError("iSCSI: CHAP needs both a user name and a password", 22)
        if target_password is not None and user is None:
            raise LoginError("iSCSI: mutual CHAP needs the initiator's CHAP account too", 22)
        self.host, self.port, self.target = host, port, target
        self.where = f"iscsi://{host}:{port}/{target or ''}"
        self.timeout = timeout
        self.discovery = discovery
        self.params = Negotiated()
        self.isid = bytes([0x80, 0]) + secrets.token_bytes(4)     # "random" ISID format
        self.tsih = 0
        self.cmd_sn = 1
        self.exp_stat_sn = 0
        self.max_cmd_sn = 1
        self._itt = 0
        self._tasks = {}
        self._tasks_lock = threading.Lock()
        self._stopping = threading.Event()       # ends the idle reader
        self._role = threading.Lock()            # held by the thread reading the socket
        self._order = threading.Lock()           # commands leave in CmdSN order
        self._window = threading.Condition()     # CmdSN window; never held while sending
        self._send_lock = threading.Lock()
        self._dead = None                        # the error that ended the connection
        self._reader = None
        self._closing = False
        for hop in range(MAX_REDIRECTS + 1):
            self.sock = self._connect()
            try:
                self._login(initiator_name, user, password, target_user, target_password)
                break
            except Redirected as moved:
                self.sock.close()
                if hop == MAX_REDIRECTS:
                    raise LoginError(f"{self.where}: more than {MAX_REDIRECTS} login "
                                     f"redirections") from None
                self._restart_at(moved.host, moved.port)
            except BaseException:
                self.sock.close()
                raise
        try:
            if not discovery:
                self._start_reader()
        except BaseException:
            self.sock.close()
            raise

    def _restart_at(self, host, port):
        """Log in afresh at ``host:port`` (a redirection)."""
        self.host, self.port = host, port
        self.where = f"iscsi://{host}:{port}/{self.target or ''}"
        self.params = Negotiated()
        self.tsih, self.cmd_sn, self.exp_stat_sn, self.max_cmd_sn = 0, 1, 0, 1

    # -- connection and login -------------------------------------------------------------

    def _connect(self):
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            err = ImageError(f"{self.where}: cannot connect to the iSCSI target: "
                             f"{e.strerror or e}")
            err.errno = e.errno or 5
            raise err from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _next_itt(self):
        with self._tasks_lock:
            while True:
                self._itt = (self._itt + 1) & 0xFFFFFFFF
                if self._itt != NO_TAG and self._itt not in self._tasks:
                    return self._itt

    def _login_exchange(self, csg, nsg, transit, keys):
        """Send one login request; return the target's keys (following
        continued responses) and the final response PDU."""
        flags = (P.LOGIN_TRANSIT if transit else 0) | (csg << 2) | (nsg if transit else 0)
        itt = self._next_itt()
        data = P.encode_text(keys)
        pairs = []
        for _ in range(MAX_LOGIN_STEPS):
            req = Pdu(P.LOGIN_REQUEST, flags, 0, 0, self.isid + self.tsih.to_bytes(2, "big"),
                      itt, (0, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0), data, immediate=True)
            P.send_pdu(self.sock, req)
            rsp = P.recv_pdu(self.sock, LOGIN_MAX_DATA)
            if rsp.opcode != P.LOGIN_RESPONSE:
                raise LoginError(f"{self.where}: target answered a login with {rsp.name}")
            status = (rsp.words[4] >> 16) & 0xFFFF       # status class and detail, bytes 36-37
            if status >> 8 == 1:                         # redirection: TargetAddress says where
                address = dict(P.decode_text(rsp.data, "login redirection")).get("TargetAddress")
                raise Redirected(self.where, address)
            if status:
                what = LOGIN_STATUS.get(status, "login refused")
                raise LoginError(f"{self.where}: login refused: {what} "
                                 f"(status {status:#06x})", LOGIN_ERRNO.get(status, 5))
            self.exp_stat_sn = (rsp.stat_sn + 1) & 0xFFFFFFFF
            self._update_window(rsp.exp_cmd_sn, rsp.max_cmd_sn)
            self.tsih = int.from_bytes(rsp.lun[6:8], "big")
            pairs += P.decode_text(rsp.data, "login response")
            if len(pairs) > 512:
                raise LoginError(f"{self.where}: login response with too many keys")
            if not rsp.flags & P.LOGIN_CONTINUE:
                return dict(pairs), rsp
            data = b""          # ask for the rest of the target's text, not moving on
            flags &= ~(P.LOGIN_TRANSIT | 3)
        raise LoginError(f"{self.where}: login text never ended")

    def _login(self, initiator_name, user, password, target_user, target_password):
        first = [("InitiatorName", initiator_name),
                 ("SessionType", "Discovery" if self.discovery else "Normal")]
        if not self.discovery:
            first.append(("TargetName", self.target))
        if user is None:
            keys, rsp = self._login_exchange(P.STAGE_SECURITY, P.STAGE_OPERATIONAL, True,
                                             first + [("AuthMethod", "None")])
        else:
            keys, rsp = self._chap(first, user, password, target_user, target_password)
        for _ in range(MAX_LOGIN_STEPS):
            if rsp.flags & P.LOGIN_TRANSIT and (rsp.flags >> 2) & 3 == P.STAGE_SECURITY and \
                    rsp.flags & 3 == P.STAGE_OPERATIONAL:
                break
            keys, rsp = self._login_exchange(P.STAGE_SECURITY, P.STAGE_OPERATIONAL, True, [])
        else:
            raise LoginError(f"{self.where}: target never left the security stage")
        self._operational()

    def _chap(self, first, user, password, target_user, target_password):
        keys, _ = self._login_exchange(P.STAGE_SECURITY, P.STAGE_OPERATIONAL, False,
                                       first + [("AuthMethod", "CHAP")])
        if keys.get("AuthMethod") != "CHAP":
            raise LoginError(f"{self.where}: target does not accept CHAP "
                             f"(AuthMethod={keys.get('AuthMethod')})", 13)
        keys, _ = self._login_exchange(P.STAGE_SECURITY, P.STAGE_OPERATIONAL, False,
                                       [("CHAP_A", CHAP_MD5)])
        if keys.get("CHAP_A") != str(CHAP_MD5) or "CHAP_I" not in keys or "CHAP_C" not in keys:
            raise LoginError(f"{self.where}: target offered no MD5 CHAP challenge "
                             f"(CHAP_A={keys.get('CHAP_A')})", 13)
        try:
            identifier = int(keys["CHAP_I"], 0)
        except ValueError:
            identifier = -1
        if not 0 <= identifier <= 255:
            raise LoginError(f"{self.where}: CHAP_I={keys['CHAP_I']!r} is not 0..255")
        challenge = chap_decode(keys["CHAP_C"], "CHAP_C")
        answer = [("CHAP_N", user),
                  ("CHAP_R", "0x" + chap_response(identifier, password.encode(), challenge).hex())]
        mutual = target_password is not None
        if mutual:
            my_id = secrets.randbelow(256)
            my_challenge = secrets.token_bytes(CHAP_CHALLENGE_BYTES)
            if my_challenge == challenge:
                raise LoginError(f"{self.where}: CHAP challenge reflected")
            answer += [("CHAP_I", my_id), ("CHAP_C", "0x" + my_challenge.hex())]
        keys, rsp = self._login_exchange(P.STAGE_SECURITY, P.STAGE_OPERATIONAL, True, answer)
        if mutual:
            got = chap_decode(keys.get("CHAP_R", "0x"), "CHAP_R")
            want = chap_response(my_id, target_password.encode(), my_challenge)
            if not secrets.compare_digest(got, want) or \
                    (target_user is not None and keys.get("CHAP_N") != target_user):
                raise LoginError(f"{self.where}: the target failed mutual CHAP authentication "
                                 f"(CHAP_N={keys.get('CHAP_N')!r})", 13)
        return keys, rsp

    def _operational(self):
        ours = [("HeaderDigest", "None"), ("DataDigest", "None"),
                ("MaxRecvDataSegmentLength", OUR_MAX_RECV), ("DefaultTime2Wait", 0),
                ("DefaultTime2Retain", 0), ("ErrorRecoveryLevel", 0)]
        if not self.discovery:
            ours += [("InitialR2T", "No"), ("ImmediateData", "Yes"),
                     ("MaxBurstLength", WANT_MAX_BURST), ("FirstBurstLength", WANT_FIRST_BURST),
                     ("MaxOutstandingR2T", 1), ("MaxConnections", 1),
                     ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes")]
        offered = {k for k, _ in ours}
        send = ours
        for _ in range(MAX_LOGIN_STEPS):
            keys, rsp = self._login_exchange(P.STAGE_OPERATIONAL, P.STAGE_FULL_FEATURE, True,
                                             send)
            send = []
            for key, value in keys.items():
                self.params.apply(key, value)
                if key not in offered and key not in TARGET_DECLARES:
                    # the target proposes: refuse what this side does not do
                    send.append((key, "Irrelevant" if key in ("OFMarker", "IFMarker")
                                 else "NotUnderstood"))
                    offered.add(key)
            if rsp.flags & P.LOGIN_TRANSIT and rsp.flags & 3 == P.STAGE_FULL_FEATURE:
                break
        else:
            raise LoginError(f"{self.where}: target never entered the full feature phase")
        if self.params.first_burst > self.params.max_burst:
            raise LoginError(f"{self.where}: FirstBurstLength {self.params.first_burst} exceeds "
                             f"MaxBurstLength {self.params.max_burst}")

    # -- discovery --------------------------------------------------------------------------

    def send_targets(self):
        """``[(target name, [address, ...]), ...]`` of a discovery session."""
        assert self.discovery
        itt = self._next_itt()
        ttt, pairs = NO_TAG, []
        data = P.encode_text([("SendTargets", "All")])
        for _ in range(MAX_LOGIN_STEPS * 64):
            req = Pdu(P.TEXT_REQUEST, P.FINAL, lun=bytes(8), itt=itt,
                      words=(ttt, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0), data=data)
            P.send_pdu(self.sock, req)
            self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
            rsp = P.recv_pdu(self.sock, OUR_MAX_RECV)
            if rsp.opcode != P.TEXT_RESPONSE or rsp.itt != itt:
                raise ProtocolError(f"{self.where}: target answered SendTargets with {rsp.name}")
            self.exp_stat_sn = (rsp.stat_sn + 1) & 0xFFFFFFFF
            pairs += P.decode_text(rsp.data, "SendTargets response")
            if sum(len(k) + len(v) for k, v in pairs) > P.MAX_TEXT:
                raise ProtocolError(f"{self.where}: SendTargets response over {P.MAX_TEXT} bytes")
            if not rsp.flags & P.LOGIN_CONTINUE:       # the C bit, at the same place
                break
            ttt, data = rsp.ttt, b""
        targets = []
        for key, value in pairs:
            if key == "TargetName":
                targets.append((value, []))
            elif key == "TargetAddress" and targets:
                targets[-1][1].append(value)
        return targets

    # -- full feature phase --------------------------------------------------------------

    def _start_reader(self):
        # Blocking socket; a send or the rest of a PDU that takes longer than
        # the timeout fails (SO_SNDTIMEO, SO_RCVTIMEO): a target that stops
        # reading or stops mid-PDU cannot hang us.  Waiting for a PDU to
        # start is a poll with the waiting command's deadline.
        self.sock.settimeout(None)
        secs = int(self.timeout)
        tv = struct.pack("ll", secs, int((self.timeout - secs) * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self._header = memoryview(bytearray(P.BHS_SIZE))   # the role holder's
        self._leader_poll = select.poll()                   # the role holder's
        self._leader_poll.register(self.sock, select.POLLIN)
        self._reader = threading.Thread(target=self._idle_loop, daemon=True,
                                        name=f"iscsi-idle-{self.host}:{self.port}")
        self._reader.start()

    def _update_window(self, exp_cmd_sn, max_cmd_sn):
        if max_cmd_sn == self.max_cmd_sn and self._reader is not None:
            return                  # the usual case: nothing moved
        with self._window:
            if sn_lt(max_cmd_sn, (exp_cmd_sn - 1) & 0xFFFFFFFF):
                return              # RFC 7143 4.2.2.1: such values are ignored
            if sn_lt(self.max_cmd_sn, max_cmd_sn) or self._reader is None:
                self.max_cmd_sn = max_cmd_sn
            self._window.notify_all()

    def _stat(self, stat_sn):
        n = (stat_sn + 1) & 0xFFFFFFFF
        if sn_lt(self.exp_stat_sn, n):
            self.exp_stat_sn = n

    # Who reads the socket.  The thread holding ``_role`` does: a thread
    # waiting for its command takes the role if it is free and reads (and
    # dispatches every PDU that comes, its own and others') until its command
    # ends, then hands the role to another waiting command.  So a lone
    # command is sent and answered on one thread, with no hand-over.  While
    # no command waits, the idle thread watches the socket for NOP-In pings
    # and for the connection's end.

    def _read_one(self):
        try:
            self._dispatch(P.recv_header(self.sock, self._header))
        except ProtocolError as e:
            self._fail_all(e)
            raise self._dead from None

    def _handoff(self, me=None):
        """The role is free: wake a thread waiting in _wait so it takes it.
        Only such a thread: one still sending (Data-Out) takes the role
        itself when it gets to _wait, and one waiting for the CmdSN window
        has no task yet.  A thread marks itself waiting before it tries the
        role, so none can fail to get it and then miss this wake-up."""
        with self._tasks_lock:
            for task in self._tasks.values():
                if task is not me and task.waiting and not task.done:
                    task.signal()
                    return

    def _idle_loop(self):
        """Every IDLE_POLL seconds: when no command waits and a PDU is there
        (a NOP-In, an asynchronous message, the connection's end), read it.
        A timer rather than a wake-up per command: commands cost nothing here."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        try:
            while not self._stopping.wait(IDLE_POLL):
                if self._dead is not None:
                    return
                if self._tasks or not poller.poll(0):
                    continue
                if not self._role.acquire(blocking=False):
                    continue                    # a command has the socket
                try:
                    if not self._tasks and self._dead is None:
                        self._read_one()
                finally:
                    self._role.release()
                    self._handoff()
        except ImageError:
            pass                                # _read_one failed every waiter
        except BaseException as e:              # a drivebay bug: fail, do not hang
            self._fail_all(ProtocolError(f"iSCSI idle reader failed: {e!r}"))

    def _lead(self, task, deadline, what):
        """Read and dispatch PDUs (the role held) until ``task`` ends or has
        an R2T to answer: Data-Out goes without the role, so a target that
        will not read while its own sends wait still gets read."""
        poll = self._leader_poll.poll
        while True:
            if task.r2ts or task.error is not None or task.done:
                return
            left = deadline - time.monotonic()
            if left <= 0 or not poll(max(1, int(left * 1000))):
                self._timed_out(what)
            self._read_one()

    def _fail_all(self, error):
        if self._dead is None:
            self._dead = ProtocolError(f"{self.where}: {error}",
                                       getattr(error, "errno", None) or 5)
        with self._tasks_lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            task.error = self._dead
            task.signal()
        with self._window:
            self._window.notify_all()
        self._stopping.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, pdu):
        op = pdu.opcode
        task = self._tasks.get(pdu.itt)
        if op == P.DATA_IN:
            self._data_in(pdu, task)
            return
        P.recv_data(self.sock, pdu, OUR_MAX_RECV)
        if op != P.R2T and op != P.ASYNC_MESSAGE and not (op == P.NOP_IN and pdu.itt == NO_TAG):
            self._stat(pdu.stat_sn)
        if op not in (P.REJECT,):
            self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
        if op == P.SCSI_RESPONSE:
            if task is None:
                return
            if pdu.b2 != 0:
                task.error = ImageError(f"{self.where}: target failed the command "
                                        f"(iSCSI response {pdu.b2:#04x})")
                task.error.errno = 5
            task.status = pdu.b3
            if len(pdu.data) >= 2:
                n = int.from_bytes(pdu.data[:2], "big")
                task.sense = pdu.data[2:2 + n]
            task.residual = self._residual(pdu.flags, pdu.residual)
            self._finish(task, pdu)
        elif op == P.R2T:
            if task is None or task.view is not None:
                raise ProtocolError(f"{self.where}: R2T for task {pdu.itt:#x}, which is not a "
                                    f"write in progress")
            task.r2ts.append((pdu.buffer_offset, pdu.residual, pdu.ttt))
            task.signal()
        elif op == P.NOP_IN:
            if pdu.ttt != NO_TAG:        # the target pings: answer with its tag and data
                reply = Pdu(P.NOP_OUT, P.FINAL, lun=pdu.lun, itt=NO_TAG,
                            words=(pdu.ttt, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0),
                            data=pdu.data, immediate=True)
                threading.Thread(target=self._send_quietly, args=(reply,), daemon=True).start()
            elif task is not None:
                self._finish(task, pdu)
        elif op in (P.LOGOUT_RESPONSE, P.TEXT_RESPONSE, P.TASK_MGMT_RESPONSE):
            if task is not None:
                self._finish(task, pdu)
        elif op == P.REJECT:
            rejected = pdu.data[16:20]
            task = self._tasks.get(int.from_bytes(rejected, "big")) if len(rejected) == 4 else None
            if task is not None:
                task.error = ImageError(f"{self.where}: target rejected the command "
                                        f"(reason {pdu.b2:#04x})")
                task.error.errno = 5
                self._finish(task, pdu)
        elif op == P.ASYNC_MESSAGE:
            event = pdu.words[4] >> 24
            if event in (2, 3):          # the target drops the connection / session
                raise ProtocolError(f"{self.where}: target is dropping the connection "
                                    f"(async event {event})", 104)
        else:
            raise ProtocolError(f"{self.where}: unexpected {pdu.name} in the full feature phase")

    @staticmethod
    def _residual(flags, count):
        if flags & P.RESP_UNDERFLOW:
            return count
        if flags & P.RESP_OVERFLOW:
            return -count
        return 0

    def _data_in(self, pdu, task):
        n = pdu.data_length
        if task is None or task.view is None:
            raise ProtocolError(f"{self.where}: Data-In for task {pdu.itt:#x}, which expects "
                                f"no data")
        at = pdu.buffer_offset
        if n > OUR_MAX_RECV or at + n > len(task.view):
            raise ProtocolError(f"{self.where}: Data-In of {n} bytes at offset {at} outside the "
                                f"{len(task.view)}-byte transfer (or over the "
                                f"{OUR_MAX_RECV}-byte segment limit)")
        P.recv_data(self.sock, pdu, OUR_MAX_RECV, into=task.view[at:at + n])
        task.got += n
        if pdu.flags & P.DATA_STATUS:
            self._stat(pdu.stat_sn)
            self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
            task.status = pdu.b3
            task.residual = self._residual(pdu.flags, pdu.residual)
            self._finish(task, pdu)
        else:
            self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)

    @staticmethod
    def _finish(task, pdu):
        task.response = pdu
        task.done = True
        task.signal()

    def _send_quietly(self, pdu):
        try:
            self._send(pdu)
        except ImageError:
            pass

    def _send(self, pdu, data=None):
        if self._dead is not None:
            raise self._dead
        try:
            with self._send_lock:
                P.send_pdu(self.sock, pdu, data)
        except ProtocolError as e:
            self._fail_all(e)
            raise self._dead from None

    def _new_task(self, view=None):
        task = _Task(self._next_itt(), view)
        with self._tasks_lock:
            self._tasks[task.itt] = task
        return task

    def _drop_task(self, task):
        with self._tasks_lock:
            self._tasks.pop(task.itt, None)

    def _take_cmd_sn(self, deadline):
        """The next CmdSN once the target's window has room for it."""
        with self._window:
            while not sn_le(self.cmd_sn, self.max_cmd_sn):
                if self._dead is not None:
                    raise self._dead
                left = deadline - time.monotonic()
                if left <= 0:
                    self._timed_out("the command window to open")
                self._window.wait(left)
            sn = self.cmd_sn
            self.cmd_sn = (sn + 1) & 0xFFFFFFFF
            return sn

    def _timed_out(self, what):
        err = ProtocolError(f"no answer from the target in {self.timeout:g} s waiting for "
                            f"{what}; connection closed", 110)
        self._fail_all(err)
        raise self._dead

    def _wait(self, task, deadline, what, on_r2t=None):
        """Wait for ``task`` to end, reading the socket when no other thread
        does; ``on_r2t(offset, length, ttt)`` answers its R2Ts."""
        while True:
            while task.r2ts:
                on_r2t(*task.r2ts.popleft())
            if task.error is not None:
                raise task.error
            if task.done:
                return
            task.waiting = True          # before trying the role: see _handoff
            if self._role.acquire(blocking=False):
                task.waiting = False
                try:
                    self._lead(task, deadline, what)
                finally:
                    self._role.release()
                    self._handoff(task)
                continue
            left = deadline - time.monotonic()
            woke = left > 0 and task.wake.acquire(timeout=left)
            task.waiting = False
            if not woke:
                self._timed_out(what)

    def execute(self, lun_field, cdb, read_into=None, write=None, timeout=None):
        """Run one SCSI command: ``read_into`` (a writable view) receives the
        data of a read, ``write`` (a buffer) is sent for a write.  Returns a
        ScsiResult; transport failures raise ImageError."""
        if self._dead is not None:
            raise self._dead
        deadline = time.monotonic() + (timeout or self.timeout)
        view = memoryview(read_into).cast("B") if read_into is not None else None
        out = memoryview(write).cast("B") if write is not None else None
        length = len(view) if view is not None else len(out) if out is not None else 0
        prm = self.params
        immediate = 0
        unsolicited = 0
        if out is not None and length:
            if prm.immediate_data:
                immediate = min(length, prm.first_burst, prm.max_xmit)
            if not prm.initial_r2t:
                unsolicited = min(length, prm.first_burst) - immediate
        flags = (P.CMD_READ if view is not None else 0) | (P.CMD_WRITE if out is not None else 0) \
            | P.ATTR_SIMPLE | (0 if unsolicited else P.FINAL)
        cdb_words = struct.unpack(">4I", bytes(cdb).ljust(16, b"\0"))
        task = None
        try:
            with self._order:
                # registered only once the window has room: a task in _tasks
                # is one whose command is (about to be) on the wire
                sn = self._take_cmd_sn(deadline)
                task = self._new_task(view)
                cmd = Pdu(P.SCSI_COMMAND, flags, lun=lun_field, itt=task.itt,
                          words=(length, sn, self.exp_stat_sn) + cdb_words)
                self._send(cmd, out[:immediate] if immediate else b"")
            if unsolicited:
                self._data_out(task, out, immediate, unsolicited, NO_TAG, lun_field)

            def r2t(offset, want, ttt):
                if offset + want > length or want == 0:
                    self._fail_all(ProtocolError(f"R2T for {want} bytes at offset {offset} "
                                                 f"outside the {length}-byte write"))
                    raise self._dead
                self._data_out(task, out, offset, want, ttt, lun_field)
            self._wait(task, deadline, "a SCSI command", r2t)
        finally:
            if task is not None:
                self._drop_task(task)
        return ScsiResult(task.status, task.sense, task.residual)

    def _data_out(self, task, out, offset, length, ttt, lun_field):
        end, data_sn, step = offset + length, 0, self.params.max_xmit
        while offset < end:
            n = min(step, end - offset)
            pdu = Pdu(P.DATA_OUT, P.FINAL if offset + n == end else 0, lun=lun_field,
                      itt=task.itt, words=(ttt, 0, self.exp_stat_sn, 0, data_sn, offset, 0))
            self._send(pdu, out[offset:offset + n])
            offset += n
            data_sn += 1

    def ping(self, timeout=None):
        """A NOP-Out the target must answer (a liveness check)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        task = self._new_task()
        try:
            self._send(Pdu(P.NOP_OUT, P.FINAL, lun=bytes(8), itt=task.itt,
                           words=(NO_TAG, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0),
                           immediate=True))
            self._wait(task, deadline, "a NOP-In")
        finally:
            self._drop_task(task)

    # -- the end ------------------------------------------------------------------------------

    def logout(self, timeout=5.0):
        """Close the session politely (errors ignored: the socket closes anyway)."""
        if self._dead is not None:
            return
        if self.discovery:
            try:
                self.sock.settimeout(timeout)
                P.send_pdu(self.sock, Pdu(P.LOGOUT_REQUEST, P.FINAL, itt=self._next_itt(),
                                          words=(0, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0),
                                          immediate=True))
                P.recv_pdu(self.sock, OUR_MAX_RECV)
            except (ProtocolError, OSError):
                pass
            return
        task = self._new_task()
        try:
            self._send(Pdu(P.LOGOUT_REQUEST, P.FINAL, itt=task.itt,
                           words=(0, self.cmd_sn, self.exp_stat_sn, 0, 0, 0, 0), immediate=True))
            self._wait(task, time.monotonic() + timeout, "the logout")
        except ImageError:
            pass
        finally:
            self._drop_task(task)

    def close(self):
        if self._closing:
            return
        self._closing = True
        self.logout()
        self._fail_all(ProtocolError("session closed", 108))
        self.sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)


def discover(host, port=DEFAULT_PORT, user=None, password=None, timeout=DEFAULT_TIMEOUT,
             initiator_name=INITIATOR_NAME):
    """SendTargets=All through a discovery session."""
    session = Session(host, port, user=user, password=password, timeout=timeout,
                      discovery=True, initiator_name=initiator_name)
    try:
        return session.send_targets()
    finally:
        session.logout()
        session.sock.close()


def initiator_name():
    """The initiator's IQN: DRIVEBAY_ISCSI_INITIATOR, else drivebay's default."""
    return os.environ.get("DRIVEBAY_ISCSI_INITIATOR") or INITIATOR_NAME
