#!/usr/bin/env python3
"""vhost_frontend.py - a small vhost-user FRONTEND (the role QEMU plays) for a
virtio-net device with one queue pair, written from QEMU's
docs/interop/vhost-user.rst and the virtio 1.1 spec (2.6 split virtqueues,
5.1 virtio-net).  Python 3 standard library only, Linux only.

Tests use it to drive the switch's vhost-user backend without QEMU: sending and
receiving well-formed frames, and writing deliberately broken rings (a buggy
or malicious guest) to show that the backend stops the port, does not crash
and never touches memory outside the guest's.

Queues: 0 = RX (backend -> guest), 1 = TX (guest -> backend).

Every command prints exactly ONE JSON line on stdout.  A harness error (cannot
connect, bad reply, NACK, bad hex) prints {"ok":false,"error":"..."} and
exits with status 2 (argparse usage errors also exit 2, on stderr).  Options
common to all subcommands (placed after the subcommand):
  --socket PATH (required)   --queue-size 256   --mem-mb 16
  --mmap-offset 0    the region starts this far into the memfd, as QEMU's
                     high-RAM region does (a multiple of 4096)
  --features LIST    comma list of feature bits wanted, intersected with the
                     backend's offer; default 32,15,29,30,0,1,11,7
  --no-reply-ack     do not ask for REPLY_ACK even if offered
  --timeout-ms 3000  per control-plane reply

  send --frame-hex HEX [--count 1] [--layout alternate] [--hdr-hex 24HEX] [--wait-ms 1000]
    -> {"ok":true,"sent":N,"used":K,"used_lens":[..],"negotiated":NEG}
  receive [--buffers 16] [--buffer-size 2048] [--count 1] [--wait-ms 1000]
    -> {"ok":true,"frames":[FRAME..],"used_lens":[..],"pending_buffers":P,"negotiated":NEG}
       (returns as soon as --count frames arrived; --count 0 waits the full time)
       FRAME = {"hex","len","buffers","hdr":{"flags","gso_type","hdr_len","gso_size",
                "csum_start","csum_offset","num_buffers"}} plus "overrun":true when a
                used len exceeds its buffer, or {"error": ...} for an unknown used id
  break --how KIND [--wait-ms 500] [--pid PID]
    -> {"ok":true,"how","queue","head","detail", **STATUS,"negotiated":NEG}
       The status is taken after --wait-ms; for the rx-* kinds the test must
       send a frame toward the port during that window.
  session   one connection driven by JSON lines on stdin.  First line out:
       {"ok":true,"ready":true,"negotiated":NEG}; then one answer line per
       command line (an "id" field is echoed back; errors answer ok:false and
       the session goes on; EOF or "close" ends it):
         {"cmd":"send","frame":HEX,"count":N | "frames":[HEX..],"layout":L,"hdr":HEX,"wait_ms":T}
         {"cmd":"receive","buffers":N,"buffer_size":S,"count":K,"wait_ms":T}
         {"cmd":"break","how":KIND}     answers at once; trigger, then "status"
         {"cmd":"status","pid":PID}
         {"cmd":"close"}
       RX buffers posted by "receive" stay posted, so an rx-* break in a session
       only bites once those are used up (or break before any receive).

NEG    = {"offered":[bits],"features":[bits],"protocol_features":[bits],"reply_ack","queue_num"}
STATUS = {"socket_closed":bool,"pid_alive":bool|null,"rx":Q,"tx":Q[,"rx_readonly_written":bool]}
Q      = {"avail_idx","used_idx","used_flags","avail_event","calls","used_since_break":[{"id","len"}]}

TX layouts (virtio 1.1 2.6.4, any layout is legal under VERSION_1): single =
header and frame in one descriptor; split = header alone, then the frame;
ragged = the header itself cut after 5 bytes; alternate = single and split in
turn.  Anything longer than a 4 KiB slot continues in further descriptors.

Break KINDs (TX ring unless rx-): loop, out-of-range (0xdead0000), straddle
(runs past the region's end), wrap (addr+len overflows 64 bits), oversized
(40 x 4 KiB = 160 KiB chain), bad-index (avail entry >= queue size), bad-next
(next >= queue size), avail-jump (avail idx moves queue size + 1), short-header
(4-byte chain, less than the 12-byte header), indirect (INDIRECT flag without
the feature), rx-out-of-range, rx-straddle, rx-readonly (RX buffer without the
WRITE flag; the status says whether the backend wrote into it anyway).
"""
import argparse
import json
import mmap
import os
import select
import socket
import struct
import sys
import time

# Front-end request ids (vhost-user.rst, "Front-end message types").
GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM, SET_VRING_ENABLE = 15, 16, 17, 18
VERSION, FLAG_REPLY, FLAG_NEED_REPLY = 0x1, 0x4, 0x8
F_MRG_RXBUF, F_INDIRECT_DESC, F_EVENT_IDX, F_PROTOCOL_FEATURES = 15, 28, 29, 30
PF_MQ, PF_REPLY_ACK = 0, 3
DEFAULT_FEATURES = "32,15,29,30,0,1,11,7"
D_NEXT, D_WRITE, D_INDIRECT = 1, 2, 4
HDR = 12                  # virtio_net_hdr_v1: with VERSION_1 num_buffers is always there
HDR_FIELDS = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset", "num_buffers")
RX, TX = 0, 1
GPA_BASE = 0x100000       # guest-physical base of the single region (not 0: offsets != addresses)
UA_BASE = 0x7f1234500000  # fake QEMU virtual address of the same region, deliberately unlike
                          # GPA_BASE so a backend that mixes the two address spaces misses
SLOT = 4096               # every descriptor index owns one fixed 4 KiB data slot
BAD_GPA = 0xdead0000
# A deterministic 60-byte frame (broadcast, local-experimental ethertype) for broken chains,
# so that whatever the backend does with them is reproducible.
JUNK = bytes.fromhex("ffffffffffff" "020000000001" "88b5") + bytes(46)


class HarnessError(Exception):
    pass


def align(x, a):
    return (x + a - 1) & ~(a - 1)


def bits(v):
    return [b for b in range(64) if v >> b & 1]


def pid_alive(pid):
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    # A zombie already died; only its parent (the test runner) has not reaped it.
    return state not in ("Z", "X")


class Queue:
    """The driver's side of one split virtqueue; offsets are into guest memory."""

    def __init__(self, index, n, base):
        self.index, self.n = index, n
        self.desc = base                                # 16-byte aligned
        self.avail = base + 16 * n                      # flags, idx, ring[n], used_event
        self.used = align(self.avail + 6 + 2 * n, 4096)  # flags, idx, {id,len}[n], avail_event
        self.end = align(self.used + 6 + 8 * n, 4096)
        self.free = list(range(n))  # descriptor indices the driver owns
        self.chains = {}            # head -> (indices, [(offset, len)]) lent to the device
        self.avail_idx = 0          # free-running u16: wraps at 65536, not at n
        self.used_seen = 0
        self.done = []              # harvested used entries (id, len, known, data, overrun)
        self.pending = []           # RX entries of a mergeable frame not yet complete
        self.break_mark = None
        self.calls = 0
        self.kick = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.call = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class Frontend:
    def __init__(self, a):
        self.n = a.queue_size
        if self.n < 2 or self.n > 32768 or self.n & (self.n - 1):
            raise HarnessError("a split ring's size is a power of 2, at most 32768")
        if a.mmap_offset % mmap.ALLOCATIONGRANULARITY:
            raise HarnessError("--mmap-offset must be page aligned")
        self.size = a.mem_mb << 20
        self.readonly = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(a.timeout_ms / 1000)
        try:
            self.sock.connect(a.socket)
        except OSError as e:
            raise HarnessError(f"connect {a.socket}: {e}")
        self.reply_ack = False
        self.negotiate(a)
        self.setup_memory(a.mmap_offset)
        self.setup_rings()

    # ---- control plane -------------------------------------------------
    def recv_exact(self, n, req):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.sock.recv(n - len(buf))
            except OSError as e:
                raise HarnessError(f"request {req}: no reply: {e}")
            if not chunk:
                raise HarnessError(f"request {req}: backend closed the socket")
            buf += chunk
        return buf

    def msg(self, req, payload=b"", fds=(), want_reply=False):
        # Once REPLY_ACK is negotiated every request that has no reply of its own asks
        # for one, so a backend's refusal shows up at the request that caused it.
        ack = self.reply_ack and not want_reply
        hdr = struct.pack("=III", req, VERSION | (FLAG_NEED_REPLY if ack else 0), len(payload))
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))] if fds else []
        try:
            # One sendmsg: the fds ride on the header's first byte, as QEMU sends them.
            if self.sock.sendmsg([hdr + payload], anc) != len(hdr) + len(payload):
                raise HarnessError(f"request {req}: short send")
        except OSError as e:
            raise HarnessError(f"request {req}: send: {e}")
        if not (want_reply or ack):
            return None
        rreq, rflags, rsize = struct.unpack("=III", self.recv_exact(12, req))
        body = self.recv_exact(rsize, req) if rsize else b""
        if rreq != req or rflags & 3 != VERSION or not rflags & FLAG_REPLY:
            raise HarnessError(f"request {req}: bad reply header request={rreq} flags={rflags:#x}")
        if ack and (len(body) != 8 or struct.unpack("=Q", body)[0] != 0):
            raise HarnessError(f"request {req}: backend refused it (ack payload {body.hex()})")
        return body

    def get_u64(self, req):
        body = self.msg(req, want_reply=True)
        if len(body) != 8:
            raise HarnessError(f"request {req}: reply of {len(body)} bytes, want 8")
        return struct.unpack("=Q", body)[0]

    def negotiate(self, a):
        # Roughly QEMU's order: features and protocol features first, SET_OWNER, then
        # SET_FEATURES when the device starts.  A backend must not depend on the order.
        self.offered = self.get_u64(GET_FEATURES)
        self.features = self.offered & sum(1 << b for b in a.features)
        self.proto, self.queue_num = 0, None
        if self.features & 1 << F_PROTOCOL_FEATURES:
            want = 1 << PF_MQ | (0 if a.no_reply_ack else 1 << PF_REPLY_ACK)
            self.proto = self.get_u64(GET_PROTOCOL_FEATURES) & want
            self.msg(SET_PROTOCOL_FEATURES, struct.pack("=Q", self.proto))
            self.reply_ack = bool(self.proto & 1 << PF_REPLY_ACK)
            if self.proto & 1 << PF_MQ:
                self.queue_num = self.get_u64(GET_QUEUE_NUM)
        self.msg(SET_OWNER)
        self.msg(SET_FEATURES, struct.pack("=Q", self.features))
        self.mrg = bool(self.features & 1 << F_MRG_RXBUF)
        self.event_idx = bool(self.features & 1 << F_EVENT_IDX)

    def setup_memory(self, off):
        # The memfd is exactly offset + size long: a backend that reads past the
        # region's end finds no file behind it.
        self.memfd = os.memfd_create("vsw-test-guest", os.MFD_CLOEXEC)
        os.ftruncate(self.memfd, off + self.size)
        self.mem = mmap.mmap(self.memfd, self.size, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE, offset=off)
        # nregions, padding, then one region: guest address, size, user address, mmap offset.
        # Only the regions in use are sent (size 8 + 32 * n), as QEMU does.
        table = struct.pack("=II", 1, 0) + struct.pack("=QQQQ", GPA_BASE, self.size, UA_BASE, off)
        self.msg(SET_MEM_TABLE, table, fds=[self.memfd])

    def setup_rings(self):
        self.q, base = [], 0
        for i in (RX, TX):
            self.q.append(Queue(i, self.n, base))
            base = self.q[-1].end
        self.data = base
        if self.data + 2 * self.n * SLOT > self.size:
            raise HarnessError("--mem-mb too small for this queue size")
        for q in self.q:
            self.msg(SET_VRING_NUM, struct.pack("=II", q.index, self.n))
            self.msg(SET_VRING_BASE, struct.pack("=II", q.index, 0))
            # Ring addresses are QEMU *virtual* addresses (descriptors hold guest-physical
            # ones), and the order is desc, USED, avail, log.
            self.msg(SET_VRING_ADDR, struct.pack("=IIQQQQ", q.index, 0, UA_BASE + q.desc,
                                                 UA_BASE + q.used, UA_BASE + q.avail, 0))
            # u64 payload: bits 0-7 queue index, bit 8 clear = an fd is attached.
            self.msg(SET_VRING_KICK, struct.pack("=Q", q.index), fds=[q.kick])
            self.msg(SET_VRING_CALL, struct.pack("=Q", q.index), fds=[q.call])
        if self.features & 1 << F_PROTOCOL_FEATURES:
            # With protocol features rings start disabled (vhost-user.rst "Ring states").
            for q in self.q:
                self.msg(SET_VRING_ENABLE, struct.pack("=II", q.index, 1))

    def negotiated(self):
        return {"offered": bits(self.offered), "features": bits(self.features),
                "protocol_features": bits(self.proto), "reply_ack": self.reply_ack,
                "queue_num": self.queue_num}

    # ---- rings ---------------------------------------------------------
    def put(self, fmt, off, *v):
        struct.pack_into("<" + fmt, self.mem, off, *v)  # virtio 1.x rings are little-endian

    def get(self, fmt, off):
        return struct.unpack_from("<" + fmt, self.mem, off)[0]

    def slot(self, q, i):
        return self.data + (q.index * self.n + i) * SLOT

    def desc(self, q, i, addr, length, flags, nxt=0):
        self.put("QIHH", q.desc + 16 * i, addr, length, flags, nxt)

    def take(self, q, k):
        """k free descriptor indices; waits for the device to give some back if needed."""
        if k > self.n:
            raise HarnessError(f"a chain of {k} descriptors cannot fit a ring of {self.n}")
        deadline = time.monotonic() + 2
        while len(q.free) < k:
            self.harvest(q)
            if len(q.free) >= k:
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"queue {q.index}: the backend returns no descriptors")
            self.publish(q)
            time.sleep(0.001)
        out, q.free[:k] = q.free[:k], []
        return out

    def chain(self, q, pieces):
        """Lends one chain: pieces are (bytes to copy | int length of an empty buffer, flags)."""
        idx, rec = self.take(q, len(pieces)), []
        for k, (i, (p, fl)) in enumerate(zip(idx, pieces)):
            off = self.slot(q, i)
            length = p if isinstance(p, int) else len(p)
            if not isinstance(p, int):
                self.mem[off:off + length] = p
            last = k + 1 == len(idx)
            self.desc(q, i, GPA_BASE + off, length, fl | (0 if last else D_NEXT), 0 if last else idx[k + 1])
            rec.append((off, length))
        q.chains[idx[0]] = (idx, rec)
        self.make_avail(q, idx[0])

    def make_avail(self, q, head):
        self.put("H", q.avail + 4 + 2 * (q.avail_idx % self.n), head)
        q.avail_idx = (q.avail_idx + 1) & 0xFFFF

    def publish(self, q):
        # Ring entries were stored before the index; x86 keeps stores in order, which
        # is the write barrier the spec asks for here.  The harness always kicks
        # (allowed even when avail_event says the backend does not need it).
        self.put("H", q.avail + 2, q.avail_idx)
        os.eventfd_write(q.kick, 1)

    def drain_calls(self, q):
        try:
            q.calls += os.eventfd_read(q.call)
        except BlockingIOError:
            pass

    def harvest(self, q):
        used_idx = self.get("H", q.used + 2)
        while q.used_seen != used_idx:
            e = q.used + 4 + 8 * (q.used_seen % self.n)
            uid, length = self.get("I", e), self.get("I", e + 4)
            entry = q.chains.pop(uid, None)
            data, overrun = b"", False
            if entry is not None:
                q.free.extend(entry[0])
                if q.index == RX:
                    left = length
                    for off, cap in entry[1]:
                        data += bytes(self.mem[off:off + min(cap, left)])
                        left -= min(cap, left)
                    overrun = left > 0
            q.done.append((uid, length, entry is not None, data, overrun))
            q.used_seen = (q.used_seen + 1) & 0xFFFF
        if self.event_idx:  # used_event: interrupt me when the next entry is used
            self.put("H", q.avail + 4 + 2 * self.n, q.used_seen)
        self.drain_calls(q)

    # ---- commands ------------------------------------------------------
    def send(self, frames, layout="alternate", hdr=bytes(HDR), wait_ms=1000):
        if len(hdr) != HDR:
            raise HarnessError("the virtio-net header is 12 bytes")
        q = self.q[TX]
        self.harvest(q)
        q.done = []
        for n, f in enumerate(frames):
            mode = ("single", "split")[n % 2] if layout == "alternate" else layout
            cuts = {"single": [], "split": [HDR], "ragged": [5]}.get(mode)
            if cuts is None:
                raise HarnessError(f"unknown layout {layout}")
            pkt, parts, start = hdr + f, [], 0
            for end in cuts + [len(hdr + f)]:
                parts += [pkt[s:min(s + SLOT, end)] for s in range(start, end, SLOT)]
                start = end
            self.chain(q, [(p, 0) for p in parts])
        self.publish(q)
        deadline = time.monotonic() + wait_ms / 1000
        while len(q.done) < len(frames) and time.monotonic() < deadline:
            time.sleep(0.001)
            self.harvest(q)
        done, q.done = q.done, []
        return {"sent": len(frames), "used": len(done), "used_lens": [d[1] for d in done]}

    def receive(self, buffers=16, size=2048, count=1, wait_ms=1000):
        if not HDR <= size <= SLOT:
            raise HarnessError(f"buffer size must be {HDR}..{SLOT}")
        q, frames, lens = self.q[RX], [], []
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            self.harvest(q)
            lens += [d[1] for d in q.done]
            q.pending += q.done
            q.done = []
            self.assemble(q, frames)
            if (count and len(frames) >= count) or time.monotonic() > deadline:
                break
            # Keep the ring stocked: a big merged frame may need more than we posted.
            if len(q.chains) < min(buffers, self.n):
                for _ in range(min(buffers, self.n) - len(q.chains)):
                    self.chain(q, [(size, D_WRITE)])
                self.publish(q)
            time.sleep(0.001)
        return {"frames": frames, "used_lens": lens, "pending_buffers": len(q.pending)}

    def assemble(self, q, frames):
        while q.pending:
            uid, length, known, data, overrun = q.pending[0]
            if not known or len(data) < HDR:
                frames.append({"error": f"used id {uid} len {length}: "
                               + ("not a buffer we posted" if not known else "shorter than the header")})
                q.pending.pop(0)
                continue
            h = dict(zip(HDR_FIELDS, struct.unpack_from("<BBHHHHH", data)))
            nb = h["num_buffers"] if self.mrg else 1  # without MRG_RXBUF it must read 1
            if nb == 0:
                frames.append({"error": f"used id {uid}: num_buffers 0", "hdr": h})
                q.pending.pop(0)
                continue
            if len(q.pending) < nb:
                return  # the rest of this frame is not used yet
            parts, q.pending[:nb] = q.pending[:nb], []
            body = data[HDR:] + b"".join(p[3] for p in parts[1:])
            fr = {"hex": body.hex(), "len": len(body), "buffers": nb, "hdr": h}
            if any(p[4] or not p[2] for p in parts):
                fr["overrun"] = True
            frames.append(fr)

    def break_ring(self, how):
        q = self.q[RX] if how.startswith("rx-") else self.q[TX]
        for x in self.q:
            self.harvest(x)
            x.break_mark = x.used_seen
        end = GPA_BASE + self.size
        oob = BAD_GPA if not GPA_BASE <= BAD_GPA < end else end + 0x10000000
        good = HDR + len(JUNK)
        i = self.take(q, 1)[0]
        head, detail = i, {}
        s = self.slot(q, i)
        self.mem[s:s + good] = bytes(HDR) + JUNK
        if how == "loop":
            j = self.take(q, 1)[0]
            self.desc(q, i, GPA_BASE + s, good, D_NEXT, j)
            self.desc(q, j, GPA_BASE + self.slot(q, j), good, D_NEXT, i)
        elif how == "out-of-range":
            self.desc(q, i, oob, good, 0)
        elif how == "straddle":  # starts 32 bytes before the region's end, runs 4 KiB
            self.desc(q, i, end - 32, SLOT, 0)
        elif how == "wrap":  # addr + len overflows u64: catches an unchecked "addr + len <= end"
            self.desc(q, i, 2**64 - 16, good, 0)
        elif how == "oversized":  # 40 valid 4 KiB descriptors: 160 KiB > 64 KiB + header
            idx = [i] + self.take(q, 39)
            for k, d in enumerate(idx):
                last = k == len(idx) - 1
                self.desc(q, d, GPA_BASE + self.slot(q, d), SLOT, 0 if last else D_NEXT, 0 if last else idx[k + 1])
            detail = {"descriptors": 40, "bytes": 40 * SLOT}
        elif how == "bad-index":
            head = self.n + 7
        elif how == "bad-next":
            self.desc(q, i, GPA_BASE + s, good, D_NEXT, self.n + 3)
        elif how == "avail-jump":  # more new entries than the ring holds
            head = None
            q.avail_idx = (q.avail_idx + self.n + 1) & 0xFFFF
        elif how == "short-header":
            self.desc(q, i, GPA_BASE + s, 4, 0)
        elif how == "indirect":  # a valid one-entry table, but the feature was not negotiated
            j, k = self.take(q, 2)
            self.mem[self.slot(q, k):self.slot(q, k) + good] = bytes(HDR) + JUNK
            self.put("QIHH", self.slot(q, j), GPA_BASE + self.slot(q, k), good, 0, 0)
            self.desc(q, i, GPA_BASE + self.slot(q, j), 16, D_INDIRECT)
            detail = {"indirect_negotiated": bool(self.features & 1 << F_INDIRECT_DESC)}
        elif how == "rx-out-of-range":
            self.desc(q, i, oob, 2048, D_WRITE)
        elif how == "rx-straddle":
            self.desc(q, i, end - 32, 2048, D_WRITE)
        elif how == "rx-readonly":  # device-readable only: the backend must not write it
            self.mem[s:s + 2048] = b"\xa5" * 2048
            self.readonly = s
            self.desc(q, i, GPA_BASE + s, 2048, 0)
        else:
            raise HarnessError(f"unknown break kind {how}")
        if head is not None:
            self.make_avail(q, head)
        self.publish(q)
        return {"how": how, "queue": "rx" if q.index == RX else "tx", "head": head, "detail": detail}

    def socket_closed(self):
        if not select.select([self.sock], [], [], 0)[0]:
            return False
        try:
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def status(self, pid=None):
        # Reads the rings as they are; does not consume used entries.
        out = {"socket_closed": self.socket_closed(), "pid_alive": pid_alive(pid)}
        for name, q in (("rx", self.q[RX]), ("tx", self.q[TX])):
            self.drain_calls(q)
            used_idx = self.get("H", q.used + 2)
            since = []
            if q.break_mark is not None:
                for k in range(min((used_idx - q.break_mark) & 0xFFFF, 16)):
                    e = q.used + 4 + 8 * ((q.break_mark + k) % self.n)
                    since.append({"id": self.get("I", e), "len": self.get("I", e + 4)})
            out[name] = {"avail_idx": q.avail_idx, "used_idx": used_idx, "used_flags": self.get("H", q.used),
                         "avail_event": self.get("H", q.used + 4 + 8 * self.n), "calls": q.calls,
                         "used_since_break": since}
        if self.readonly is not None:
            out["rx_readonly_written"] = self.mem[self.readonly:self.readonly + 2048] != b"\xa5" * 2048
        return out


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def session(fe):
    emit({"ok": True, "ready": True, "negotiated": fe.negotiated()})
    for line in sys.stdin:
        if not line.strip():
            continue
        c, cmd = {}, None
        try:
            c = json.loads(line)
            cmd = c.get("cmd")
            if cmd == "send":
                frames = c["frames"] if "frames" in c else [c["frame"]] * c.get("count", 1)
                out = fe.send([bytes.fromhex(f) for f in frames], c.get("layout", "alternate"),
                              bytes.fromhex(c.get("hdr", "00" * HDR)), c.get("wait_ms", 1000))
            elif cmd == "receive":
                out = fe.receive(c.get("buffers", 16), c.get("buffer_size", 2048),
                                 c.get("count", 1), c.get("wait_ms", 1000))
            elif cmd == "break":
                out = fe.break_ring(c["how"])
            elif cmd == "status":
                out = fe.status(c.get("pid"))
            elif cmd == "close":
                out = {}
            else:
                raise HarnessError(f"unknown cmd {cmd!r}")
            out["ok"] = True
        except (HarnessError, KeyError, ValueError, TypeError, AttributeError) as e:
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        if isinstance(c, dict) and "id" in c:
            out["id"] = c["id"]
        emit(out)
        if cmd == "close":
            break
    fe.sock.close()
    return 0


# Per-subcommand options: (flag, type, default); a default of None means required.
OPTIONS = {
    "send": [("--frame-hex", str, None), ("--count", int, 1), ("--hdr-hex", str, "00" * HDR),
             ("--layout", str, "alternate"), ("--wait-ms", int, 1000)],
    "receive": [("--buffers", int, 16), ("--buffer-size", int, 2048), ("--count", int, 1),
                ("--wait-ms", int, 1000)],
    "break": [("--how", str, None), ("--wait-ms", int, 500), ("--pid", int, 0)],
    "session": [],
}


def main():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", required=True)
    for flag, default in (("--queue-size", 256), ("--mem-mb", 16), ("--mmap-offset", 0), ("--timeout-ms", 3000)):
        common.add_argument(flag, type=int, default=default)
    common.add_argument("--features", default=DEFAULT_FEATURES,
                        type=lambda s: [int(b) for b in s.split(",") if b.strip()])
    common.add_argument("--no-reply-ack", action="store_true")
    p = argparse.ArgumentParser(description="vhost-user front-end test harness (see the file's docstring)")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, opts in OPTIONS.items():
        sp = sub.add_parser(name, parents=[common])
        for flag, typ, default in opts:
            sp.add_argument(flag, type=typ, default=default, required=default is None)
    a = p.parse_args()
    try:
        fe = Frontend(a)
        if a.cmd == "session":
            return session(fe)
        if a.cmd == "send":
            out = fe.send([bytes.fromhex(a.frame_hex)] * a.count, a.layout, bytes.fromhex(a.hdr_hex), a.wait_ms)
        elif a.cmd == "receive":
            out = fe.receive(a.buffers, a.buffer_size, a.count, a.wait_ms)
        else:
            out = fe.break_ring(a.how)
            time.sleep(a.wait_ms / 1000)
            out.update(fe.status(a.pid or None))
        out.update(ok=True, negotiated=fe.negotiated())
        emit(out)
        return 0
    except (HarnessError, ValueError) as e:
        emit({"ok": False, "error": f"{type(e).__name__}: {e}"})
        return 2


if __name__ == "__main__":
    sys.exit(main())
