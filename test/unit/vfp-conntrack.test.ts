import test from 'ava';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { mustParseIpv6Addr } from '../../src/packet/ipv6.js';
import { Conntrack, CtState, CT_REFUSED, CT_RESTART, Dir, TcpFlag } from '../../src/vfp/conntrack.js';
import { KEY_WORDS, KeyWord } from '../../src/vfp/key.js';

const { SYN, ACK, FIN, RST } = TcpFlag;
const S = 1000; // ms per second

interface Pkt {
  proto: number;
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  icmpType?: number;
  icmpId?: number;
}

/** A flow key laid out as src/vfp/key.ts extracts it. */
function key(p: Pkt, macSalt = 0, vlan = 0): Uint32Array {
  const k = new Uint32Array(KEY_WORDS);
  const v6 = p.src.includes(':');
  k[KeyWord.SRC_MAC_HI] = 0x0276;
  k[KeyWord.SRC_MAC_LO] = 0x0a000002 + macSalt;
  k[KeyWord.DST_MAC_HI] = 0x0276;
  k[KeyWord.DST_MAC_LO] = 0x0a000003 + macSalt;
  k[KeyWord.ETH_VLAN] = ((v6 ? 0x86dd : 0x0800) << 16) | vlan;
  k[KeyWord.PROTO] = ((p.proto << 24) | ((p.icmpType ?? 0) << 16) | (p.icmpId ?? 0)) >>> 0;
  k[KeyWord.PORTS] = (((p.sport ?? 0) << 16) | (p.dport ?? 0)) >>> 0;
  const put = (at: number, addr: string) => {
    if (!v6) {
      k[at] = mustParseIpv4Addr(addr);
      return;
    }
    const b = mustParseIpv6Addr(addr);
    for (let i = 0; i < 4; i++) k[at + i] = ((b[i * 4] << 24) | (b[i * 4 + 1] << 16) | (b[i * 4 + 2] << 8) | b[i * 4 + 3]) >>> 0;
  };
  put(KeyWord.SRC_IP, p.src);
  put(KeyWord.DST_IP, p.dst);
  return k;
}

function reply(p: Pkt, icmpType?: number): Pkt {
  return { ...p, src: p.dst, dst: p.src, sport: p.dport, dport: p.sport, icmpType: icmpType ?? p.icmpType };
}

const TCP: Pkt = { proto: 6, src: '10.0.0.2', dst: '192.0.2.7', sport: 40000, dport: 443 };
const UDP: Pkt = { proto: 17, src: '10.0.0.2', dst: '192.0.2.53', sport: 5353, dport: 53 };
const TCP6: Pkt = { proto: 6, src: 'fd00::2', dst: '2001:db8::7', sport: 40001, dport: 80 };
const P = 1;

/** A connection opened from the container (origin OUT) at port P. */
function opened(ct: Conntrack, flags: number = SYN, now = 0): number {
  const slot = ct.create(P, key(TCP), Dir.OUT, flags, now);
  if (slot < 0) throw new Error('create refused');
  return slot;
}

function established(ct: Conntrack): number {
  const slot = opened(ct);
  ct.update(slot, Dir.IN, SYN | ACK, 1);
  ct.update(slot, Dir.OUT, ACK, 2);
  return slot;
}

test('handshake: SYN -> SYN_SENT, SYN+ACK from the reply side -> SYN_RECV, ACK from the origin -> ESTABLISHED', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = opened(ct);
  t.is(ct.state(slot), CtState.SYN_SENT);
  t.is(ct.origin(slot), Dir.OUT);
  t.is(ct.update(slot, Dir.OUT, SYN, 1), CtState.SYN_SENT, 'a retransmitted SYN changes nothing');
  t.is(ct.update(slot, Dir.OUT, SYN | ACK, 1), CtState.SYN_SENT, 'SYN+ACK from the origin is not the answer');
  t.is(ct.update(slot, Dir.IN, SYN | ACK, 2), CtState.SYN_RECV);
  t.is(ct.update(slot, Dir.IN, ACK, 3), CtState.SYN_RECV, 'ACK from the reply side does not establish');
  t.is(ct.update(slot, Dir.OUT, ACK, 4), CtState.ESTABLISHED);
  t.is(ct.update(slot, Dir.IN, ACK, 5), CtState.ESTABLISHED);
});

test('the origin is the direction of the first packet: a connection into the container', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const inbound = reply(TCP); // 192.0.2.7:443 -> 10.0.0.2:40000, delivered to the container
  const slot = ct.create(P, key(inbound), Dir.IN, SYN, 0);
  t.is(ct.origin(slot), Dir.IN);
  t.is(ct.update(slot, Dir.OUT, SYN | ACK, 1), CtState.SYN_RECV);
  t.is(ct.update(slot, Dir.IN, ACK, 2), CtState.ESTABLISHED);
  t.is(ct.lookup(P, key(TCP), Dir.OUT), slot, "the container's answer finds it");
});

test('a first packet without SYN is a mid-stream pickup: ESTABLISHED (FIN_WAIT with FIN, CLOSED with RST)', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  t.is(ct.state(opened(ct, ACK)), CtState.ESTABLISHED);
  t.is(ct.state(ct.create(P, key(UDP), Dir.OUT, 0, 0)), CtState.UDP_UNREPLIED, 'flags mean nothing for UDP');
  const ct2 = new Conntrack({ capacity: 64 });
  t.is(ct2.state(opened(ct2, FIN | ACK)), CtState.FIN_WAIT);
  const ct3 = new Conntrack({ capacity: 64 });
  t.is(ct3.state(opened(ct3, RST)), CtState.CLOSED);
});

test('close begun by the origin: FIN -> FIN_WAIT, FIN from the other side -> CLOSING, final ACK -> TIME_WAIT', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = established(ct);
  t.is(ct.update(slot, Dir.OUT, FIN | ACK, 10), CtState.FIN_WAIT);
  t.is(ct.update(slot, Dir.OUT, FIN | ACK, 11), CtState.FIN_WAIT, 'a retransmitted FIN from the same side');
  t.is(ct.update(slot, Dir.IN, ACK, 12), CtState.FIN_WAIT, 'the half-closed side may keep sending');
  t.is(ct.update(slot, Dir.IN, FIN | ACK, 13), CtState.CLOSING);
  t.is(ct.update(slot, Dir.IN, ACK, 14), CtState.CLOSING, 'the ACK must come from the side that closed first');
  t.is(ct.update(slot, Dir.OUT, ACK, 15), CtState.TIME_WAIT);
});

test('close begun by the reply side ends with the ACK from the reply side', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = established(ct);
  t.is(ct.update(slot, Dir.IN, FIN | ACK, 10), CtState.FIN_WAIT);
  t.is(ct.update(slot, Dir.OUT, FIN | ACK, 11), CtState.CLOSING);
  t.is(ct.update(slot, Dir.OUT, ACK, 12), CtState.CLOSING);
  t.is(ct.update(slot, Dir.IN, ACK, 13), CtState.TIME_WAIT);
});

test('SYN_RECV with ACK+FIN from the origin goes straight to FIN_WAIT', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = opened(ct);
  ct.update(slot, Dir.IN, SYN | ACK, 1);
  t.is(ct.update(slot, Dir.OUT, ACK | FIN, 2), CtState.FIN_WAIT);
});

test('RST from either side closes the connection in any state', (t) => {
  for (const dir of [Dir.OUT, Dir.IN] as const) {
    const ct = new Conntrack({ capacity: 64 });
    let slot = opened(ct);
    t.is(ct.update(slot, dir, RST, 1), CtState.CLOSED, 'from SYN_SENT');
    ct.remove(slot);
    slot = established(ct);
    t.is(ct.update(slot, dir, RST | ACK, 3), CtState.CLOSED, 'from ESTABLISHED');
    ct.remove(slot);
    slot = established(ct);
    ct.update(slot, Dir.OUT, FIN, 3);
    t.is(ct.update(slot, dir, RST, 4), CtState.CLOSED, 'from FIN_WAIT');
  }
});

test('a bare SYN from the origin reopens TIME_WAIT and CLOSED as SYN_SENT, with the FIN history cleared', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = established(ct);
  ct.update(slot, Dir.OUT, FIN, 3);
  ct.update(slot, Dir.IN, FIN | ACK, 4);
  t.is(ct.update(slot, Dir.OUT, ACK, 5), CtState.TIME_WAIT);
  t.is(ct.update(slot, Dir.OUT, ACK, 6), CtState.TIME_WAIT, 'a stray ACK leaves TIME_WAIT alone');
  t.is(ct.update(slot, Dir.OUT, SYN, 7), CtState.SYN_SENT);
  t.is(ct.update(slot, Dir.IN, SYN | ACK, 8), CtState.SYN_RECV);
  t.is(ct.update(slot, Dir.OUT, ACK, 9), CtState.ESTABLISHED);
  t.is(ct.update(slot, Dir.IN, FIN, 10), CtState.FIN_WAIT, 'one FIN after the reopen is one FIN, not two');
  t.is(ct.update(slot, Dir.IN, RST, 11), CtState.CLOSED);
  t.is(ct.update(slot, Dir.OUT, SYN, 12), CtState.SYN_SENT, 'CLOSED reopens too');
  t.is(ct.origin(slot), Dir.OUT);
  t.is(ct.counters().restarted, 0);
});

test('a bare SYN from the reply side on TIME_WAIT or CLOSED is a new connection: CT_RESTART, counted, entry untouched', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = established(ct);
  ct.update(slot, Dir.OUT, RST, 3);
  t.is(ct.update(slot, Dir.IN, SYN | ACK, 4), CtState.CLOSED, 'SYN+ACK is no new connection');
  t.is(ct.update(slot, Dir.IN, SYN, 5), CT_RESTART);
  t.is(ct.state(slot), CtState.CLOSED);
  t.is(ct.counters().restarted, 1);
  // What the caller does: remove, then create with the SYN as the first packet.
  ct.remove(slot);
  const again = ct.create(P, key(reply(TCP)), Dir.IN, SYN, 5);
  t.is(ct.origin(again), Dir.IN);
  t.is(ct.state(again), CtState.SYN_SENT);

  const ct2 = new Conntrack({ capacity: 64 });
  const s2 = established(ct2);
  ct2.update(s2, Dir.IN, FIN, 3);
  ct2.update(s2, Dir.OUT, FIN | ACK, 4);
  t.is(ct2.update(s2, Dir.IN, ACK, 5), CtState.TIME_WAIT);
  t.is(ct2.update(s2, Dir.IN, SYN, 6), CT_RESTART);
});

test('TCP idle timeouts depend on the state', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const half = opened(ct, SYN, 0);
  t.true(ct.alive(half, 29 * S));
  t.false(ct.alive(half, 31 * S), 'half-open: 30 s');
  const est = ct.create(P, key(TCP6), Dir.OUT, ACK, 0);
  t.true(ct.alive(est, 7199 * S));
  t.false(ct.alive(est, 7201 * S), 'established: 2 h');
  ct.update(est, Dir.OUT, RST, 100 * S);
  t.true(ct.alive(est, 104 * S));
  t.false(ct.alive(est, 106 * S), 'after RST: 5 s');
  ct.update(half, Dir.IN, SYN | ACK, 1 * S);
  ct.update(half, Dir.OUT, ACK | FIN, 1 * S);
  ct.update(half, Dir.IN, ACK | FIN, 1 * S);
  t.is(ct.update(half, Dir.OUT, ACK, 20 * S), CtState.TIME_WAIT);
  t.true(ct.alive(half, 29 * S));
  t.false(ct.alive(half, 31 * S), 'TIME_WAIT: 10 s');
});

test('timeouts are configurable', (t) => {
  const ct = new Conntrack({ capacity: 64, timeouts: { tcpEstablished: 60 } });
  const slot = opened(ct, ACK, 0);
  t.true(ct.alive(slot, 59 * S));
  t.false(ct.alive(slot, 61 * S));
  t.is(ct.timeouts.udp, 60, 'the others keep their defaults');
  t.throws(() => new Conntrack({ timeouts: { udp: 0 } }), { instanceOf: RangeError });
});

test('UDP: unreplied lives 30 s, replied 60 s', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = ct.create(P, key(UDP), Dir.OUT, 0, 0);
  t.is(ct.update(slot, Dir.OUT, 0, 10 * S), CtState.UDP_UNREPLIED, 'more packets the same way');
  t.true(ct.alive(slot, 39 * S));
  t.false(ct.alive(slot, 41 * S));
  t.is(ct.update(slot, Dir.IN, 0, 20 * S), CtState.UDP_REPLIED);
  t.is(ct.update(slot, Dir.OUT, 0, 20 * S), CtState.UDP_REPLIED);
  t.true(ct.alive(slot, 79 * S));
  t.false(ct.alive(slot, 81 * S));
});

test('ICMP echo: request and reply are one connection, keyed by identifier; other types by addresses only', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const req: Pkt = { proto: 1, src: '10.0.0.2', dst: '192.0.2.9', icmpType: 8, icmpId: 77 };
  const slot = ct.create(P, key(req), Dir.OUT, 0, 0);
  t.is(ct.state(slot), CtState.ICMP);
  t.is(ct.lookup(P, key(reply(req, 0)), Dir.IN), slot, 'the echo reply');
  t.is(ct.lookup(P, key({ ...req, icmpId: 78 }), Dir.OUT), -1, 'another identifier');
  t.is(ct.lookup(P, key({ ...req, icmpId: 0 }), Dir.OUT), -1);
  const unreach = key({ ...reply(req, 3), icmpId: 0 });
  t.is(ct.lookup(P, unreach, Dir.IN), -1, 'a non-echo type is not the echo connection');
  const other = ct.create(P, unreach, Dir.IN, 0, 0);
  t.not(other, slot);
  t.is(ct.lookup(P, key({ ...req, icmpType: 11, icmpId: 0 }), Dir.OUT), other, 'any non-echo type between the addresses');
  t.is(ct.lookup(P, key({ ...req, icmpId: 0 }), Dir.OUT), -1, 'echo with identifier 0 is still echo');
  t.true(ct.alive(slot, 29 * S));
  t.false(ct.alive(slot, 31 * S), 'ICMP: 30 s');

  const req6: Pkt = { proto: 58, src: 'fd00::2', dst: '2001:db8::9', icmpType: 128, icmpId: 5 };
  const s6 = ct.create(P, key(req6), Dir.OUT, 0, 0);
  t.is(ct.lookup(P, key(reply(req6, 129)), Dir.IN), s6, 'ICMPv6 echo reply');
  t.is(ct.lookup(P, key({ ...req6, icmpType: 8 }), Dir.OUT), -1, 'ICMPv4 echo types are not echo in ICMPv6');
});

test('other protocols are tracked by addresses and protocol', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const gre: Pkt = { proto: 47, src: '10.0.0.2', dst: '192.0.2.1' };
  const slot = ct.create(P, key(gre), Dir.OUT, 0, 0);
  t.is(ct.state(slot), CtState.OTHER);
  t.is(ct.lookup(P, key(reply(gre)), Dir.IN), slot);
  t.is(ct.lookup(P, key({ ...gre, proto: 50 }), Dir.OUT), -1);
  t.true(ct.alive(slot, 59 * S));
  t.false(ct.alive(slot, 61 * S));
});

test('canonical key: the reply at the same port in the other direction finds the connection, the same packet does not', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  for (const p of [TCP, TCP6, UDP]) {
    const slot = ct.create(P, key(p), Dir.OUT, SYN, 0);
    t.is(ct.lookup(P, key(p), Dir.OUT), slot);
    t.is(ct.lookup(P, key(reply(p)), Dir.IN), slot);
    t.is(ct.lookup(P, key(p, 9, 0x1000 | 42), Dir.OUT), slot, 'MACs and VLAN are not part of the key');
    t.is(ct.lookup(P, key(p), Dir.IN), -1, 'the same packet coming in is another connection');
    t.is(ct.lookup(P, key(reply(p)), Dir.OUT), -1);
  }
  t.is(ct.lookup(P, key({ ...TCP, sport: 40002 }), Dir.OUT), -1);
  t.is(ct.lookup(P, key({ ...TCP, proto: 17 }), Dir.OUT), -1, 'same ports over UDP');
});

test('two ports with the same tuple are two connections', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const a = ct.create(1, key(TCP), Dir.OUT, SYN, 0);
  t.is(ct.lookup(2, key(TCP), Dir.OUT), -1);
  const b = ct.create(2, key(reply(TCP)), Dir.IN, SYN, 0);
  t.not(a, b);
  t.is(ct.lookup(1, key(TCP), Dir.OUT), a);
  t.is(ct.lookup(2, key(TCP), Dir.OUT), b);
  t.is(ct.origin(a), Dir.OUT);
  t.is(ct.origin(b), Dir.IN);
  t.is(ct.countForPort(1), 1);
  t.is(ct.countForPort(2), 1);
});

test('create() on an existing tuple replaces the entry', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const a = opened(ct);
  const serial = ct.serial(a);
  const b = ct.create(P, key(reply(TCP)), Dir.IN, SYN, 1);
  t.is(ct.size, 1);
  t.is(ct.lookup(P, key(TCP), Dir.OUT), b);
  t.is(ct.origin(b), Dir.IN);
  t.true(a !== b || ct.serial(b) !== serial);
});

test('idle expiry: alive() turns false, sweep() frees in budgeted steps and resumes', (t) => {
  const ct = new Conntrack({ capacity: 1000 });
  for (let i = 0; i < 100; i++) ct.create(P, key({ ...UDP, sport: 1000 + i }), Dir.OUT, 0, 0);
  for (let i = 0; i < 100; i++) ct.create(P, key({ ...UDP, sport: 2000 + i }), Dir.OUT, 0, 20 * S);
  const first = ct.lookup(P, key({ ...UDP, sport: 1000 }), Dir.OUT);
  t.true(ct.alive(first, 20 * S));
  t.false(ct.alive(first, 40 * S));
  t.is(ct.sweep(20 * S, 1000), 0, 'nothing is idle yet');
  const n = ct.sweep(40 * S, 50);
  t.true(n <= 50, 'a step visits at most its budget');
  let total = n;
  for (let i = 0; i < 1000 / 50; i++) total += ct.sweep(40 * S, 50);
  t.is(total, 100);
  t.is(ct.size, 100);
  t.is(ct.counters().expired, 100);
  t.is(ct.lookup(P, key({ ...UDP, sport: 1050 }), Dir.OUT), -1);
  t.true(ct.alive(ct.lookup(P, key({ ...UDP, sport: 2050 }), Dir.OUT), 40 * S));
  t.is(ct.sweep(10_000 * S, 1000), 100);
  t.is(ct.size, 0);
  t.is(ct.countForPort(P), 0);
});

test('an update refreshes the idle clock', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  const slot = ct.create(P, key(UDP), Dir.OUT, 0, 0);
  for (let s = 20; s <= 200; s += 20) ct.update(slot, Dir.OUT, 0, s * S);
  t.true(ct.alive(slot, 229 * S));
  t.is(ct.sweep(229 * S, 64), 0);
});

test('the serial changes when a slot is freed, by remove or by expiry', (t) => {
  const ct = new Conntrack({ capacity: 4 });
  const slot = ct.create(P, key(UDP), Dir.OUT, 0, 0);
  const s0 = ct.serial(slot);
  ct.remove(slot);
  t.false(ct.alive(slot, 0));
  t.is(ct.lookup(P, key(UDP), Dir.OUT), -1);
  t.not(ct.serial(slot), s0);
  ct.remove(slot); // removing a free slot is harmless
  const again = ct.create(P, key(UDP), Dir.OUT, 0, 0);
  t.is(again, slot, 'the freed slot is reused');
  const s1 = ct.serial(again);
  t.not(s1, s0);
  t.is(ct.sweep(100 * S, 4), 1);
  t.not(ct.serial(again), s1);
  t.is(ct.size, 0);
});

test('the per-port bound refuses and counts, other ports still create, nothing live is evicted', (t) => {
  const ct = new Conntrack({ capacity: 100, maxPerPort: 10 });
  const slots: number[] = [];
  for (let i = 0; i < 10; i++) slots.push(ct.create(1, key({ ...TCP, sport: 100 + i }), Dir.OUT, SYN, 0));
  t.is(ct.create(1, key({ ...TCP, sport: 999 }), Dir.OUT, SYN, 0), CT_REFUSED);
  t.is(ct.counters().refused, 1);
  t.true(ct.create(2, key({ ...TCP, sport: 999 }), Dir.OUT, SYN, 0) >= 0);
  for (let i = 0; i < 10; i++) t.is(ct.lookup(1, key({ ...TCP, sport: 100 + i }), Dir.OUT), slots[i]);
  ct.remove(slots[3]);
  t.true(ct.create(1, key({ ...TCP, sport: 999 }), Dir.OUT, SYN, 0) >= 0, 'room again after a remove');
  t.is(ct.countForPort(1), 10);
});

test('a full table refuses without evicting, and reclaims connections that are already dead', (t) => {
  const ct = new Conntrack({ capacity: 8 });
  for (let i = 0; i < 8; i++) t.true(ct.create(i % 3, key({ ...UDP, sport: i }), Dir.OUT, 0, 0) >= 0);
  t.is(ct.create(5, key({ ...UDP, sport: 100 }), Dir.OUT, 0, 1 * S), CT_REFUSED);
  t.is(ct.counters().refused, 1);
  t.is(ct.size, 8);
  for (let i = 0; i < 8; i++) t.not(ct.lookup(i % 3, key({ ...UDP, sport: i }), Dir.OUT), -1);
  t.true(ct.create(5, key({ ...UDP, sport: 100 }), Dir.OUT, 0, 100 * S) >= 0, 'idle ones make room');
  t.is(ct.counters().expired, 8);
  t.is(ct.size, 1);
});

test('flushPort forgets one port only', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  for (let i = 0; i < 5; i++) ct.create(1, key({ ...TCP, sport: i }), Dir.OUT, SYN, 0);
  for (let i = 0; i < 3; i++) ct.create(2, key({ ...TCP, sport: i }), Dir.OUT, SYN, 0);
  t.is(ct.flushPort(1), 5);
  t.is(ct.countForPort(1), 0);
  t.is(ct.size, 3);
  for (let i = 0; i < 5; i++) t.is(ct.lookup(1, key({ ...TCP, sport: i }), Dir.OUT), -1);
  for (let i = 0; i < 3; i++) t.not(ct.lookup(2, key({ ...TCP, sport: i }), Dir.OUT), -1);
  t.is(ct.flushPort(1), 0);
});

test('port ids must be below maxPorts', (t) => {
  const ct = new Conntrack({ capacity: 8, maxPorts: 4 });
  t.throws(() => ct.create(4, key(TCP), Dir.OUT, SYN, 0), { instanceOf: RangeError });
  t.is(ct.lookup(4, key(TCP), Dir.OUT), -1);
  t.is(ct.countForPort(99), 0);
});

test('entries() lists connections from the port side', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  established(ct);
  ct.create(2, key({ proto: 58, src: '2001:db8::9', dst: 'fd00::2', icmpType: 128, icmpId: 5 }), Dir.IN, 0, 0);
  const all = ct.entries(undefined, 3 * S);
  t.is(all.length, 2);
  t.deepEqual(ct.entries(P, 3 * S), [
    {
      portId: 1,
      origin: 'out',
      state: 'ESTABLISHED',
      protocol: 6,
      local: '10.0.0.2',
      remote: '192.0.2.7',
      localPort: 40000,
      remotePort: 443,
      idleSeconds: 3,
    },
  ]);
  t.deepEqual(ct.entries(2, 1500), [
    {
      portId: 2,
      origin: 'in',
      state: 'ICMP',
      protocol: 58,
      local: 'fd00::2',
      remote: '2001:db8::9',
      localPort: 0,
      remotePort: 0,
      echoId: 5,
      idleSeconds: 1.5,
    },
  ]);
});

test('churn: 100k random creates and removes keep the index consistent', (t) => {
  const ct = new Conntrack({ capacity: 4096, maxPerPort: 4096 });
  let seed = 12345;
  const rand = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed >>> 8) % n;
  };
  const live = new Map<string, { p: Pkt; port: number; slot: number }>();
  const liveIds: string[] = [];
  const removed: Array<{ p: Pkt; port: number }> = [];
  const check = () => {
    for (const { p, port, slot } of live.values()) {
      if (ct.lookup(port, key(p), Dir.OUT) !== slot) return false;
      if (ct.lookup(port, key(reply(p)), Dir.IN) !== slot) return false;
    }
    for (const { p, port } of removed.slice(-2000)) {
      const id = `${port}/${p.dst}/${p.sport}/${p.dport}`;
      if (!live.has(id) && ct.lookup(port, key(p), Dir.OUT) !== -1) return false;
    }
    return ct.size === live.size;
  };
  let creates = 0;
  for (let op = 0; op < 200_000; op++) {
    const grow = live.size < 1000 || (live.size < 3900 && rand(2) === 0);
    if (grow) {
      const p: Pkt = { proto: 6, src: '10.0.0.2', dst: `192.0.2.${rand(16)}`, sport: rand(512), dport: 80 + rand(4) };
      const port = rand(8);
      const id = `${port}/${p.dst}/${p.sport}/${p.dport}`;
      if (live.has(id)) continue;
      const slot = ct.create(port, key(p), Dir.OUT, SYN, 0);
      if (slot < 0) return t.fail('refused below capacity');
      live.set(id, { p, port, slot });
      liveIds.push(id);
      creates++;
    } else {
      const at = rand(liveIds.length);
      const id = liveIds[at];
      liveIds[at] = liveIds[liveIds.length - 1];
      liveIds.pop();
      const e = live.get(id)!;
      ct.remove(e.slot);
      live.delete(id);
      removed.push({ p: e.p, port: e.port });
    }
    if (op % 20_000 === 0 && !check()) return t.fail(`inconsistent after ${op} operations`);
  }
  t.true(creates >= 100_000, `${creates} creates`);
  t.true(check());
  let perPort = 0;
  for (let port = 0; port < 8; port++) perPort += ct.countForPort(port);
  t.is(perPort, live.size);
});

test('an IPv4 connection and an IPv6 one whose addresses start with the same words are two connections', (t) => {
  const ct = new Conntrack({ capacity: 64 });
  // a00:2:: and c000:207:: begin with the words of 10.0.0.2 and 192.0.2.7; every other word is zero.
  const v6: Pkt = { ...TCP, src: 'a00:2::', dst: 'c000:207::' };
  const a = ct.create(P, key(TCP), Dir.OUT, SYN, 0);
  t.is(ct.lookup(P, key(v6), Dir.OUT), -1);
  const b = ct.create(P, key(v6), Dir.OUT, ACK, 0);
  t.not(a, b);
  t.is(ct.lookup(P, key(TCP), Dir.OUT), a);
  t.is(ct.lookup(P, key(reply(v6)), Dir.IN), b);
  t.deepEqual(
    ct.entries(P, 0).map((e) => [e.local, e.remote, e.state]),
    [
      ['10.0.0.2', '192.0.2.7', 'SYN_SENT'],
      ['a00:2::', 'c000:207::', 'ESTABLISHED'],
    ],
  );
  ct.remove(a);
  t.is(ct.lookup(P, key(v6), Dir.OUT), b);
  t.is(ct.lookup(P, key(TCP), Dir.OUT), -1);
});

test('a reused slot starts with aux 0 and the state of its new connection only', (t) => {
  const ct = new Conntrack({ capacity: 4 });
  const slot = ct.create(P, key(TCP6), Dir.IN, SYN, 0);
  ct.setAux(slot, 41);
  ct.update(slot, Dir.OUT, SYN | ACK, 1);
  ct.remove(slot);
  const again = ct.create(P, key(UDP), Dir.OUT, 0, 2);
  t.is(again, slot);
  t.is(ct.aux(again), 0);
  t.is(ct.origin(again), Dir.OUT);
  t.is(ct.state(again), CtState.UDP_UNREPLIED);
  t.is(ct.lookup(P, key(TCP6), Dir.IN), -1);
  t.deepEqual(ct.entries(P, 2).map((e) => [e.local, e.remote]), [['10.0.0.2', '192.0.2.53']], 'no IPv6 word of the old connection shows');
});

test('export and import carry IPv6 addresses and a close in progress; records in the export layout import from any producer', (t) => {
  const a = new Conntrack({ capacity: 64 });
  const slot = a.create(P, key(TCP6), Dir.OUT, SYN, 0);
  a.update(slot, Dir.IN, SYN | ACK, 1);
  a.update(slot, Dir.OUT, ACK, 2);
  t.is(a.update(slot, Dir.IN, FIN | ACK, 3), CtState.FIN_WAIT, 'the close is begun by the reply side');
  const { records } = a.exportLive(10 * S);
  t.is(records[2], 0x86dd, 'the EtherType word');

  const b = new Conntrack({ capacity: 64 });
  const [imported] = b.importLive(records, 10 * S, 0, () => true);
  t.is(b.lookup(P, key(reply(TCP6)), Dir.IN), imported);
  t.deepEqual(b.entries(P, 10 * S).map((e) => [e.local, e.remote, e.localPort, e.remotePort]), [['fd00::2', '2001:db8::7', 40001, 80]]);
  t.is(b.update(imported, Dir.OUT, FIN | ACK, 11 * S), CtState.CLOSING);
  t.is(b.update(imported, Dir.OUT, ACK, 12 * S), CtState.CLOSING, 'the last ACK is owed by the side that closed first');
  t.is(b.update(imported, Dir.IN, ACK, 13 * S), CtState.TIME_WAIT);

  // An established UDP connection at port 2 written word by word: port << 8 | protocol, L4 ports, EtherType,
  // local and remote address (4 words each), state, flags (origin in), age in deciseconds, aux.
  const udp = [(2 << 8) | 17, (53 << 16) | 5353, 0x0800, 0xc0000235, 0, 0, 0, 0x0a000002, 0, 0, 0, CtState.UDP_REPLIED, 1, 50, 9];
  // The same as IPv4 with a second address word: no IPv4 connection has one, so it is left out.
  const odd = [...udp];
  odd[4] = 1;
  const c = new Conntrack({ capacity: 64 });
  const slots = c.importLive(Uint32Array.from([...udp, ...odd]), 100 * S, 0, () => true);
  t.is(slots[1], -1);
  t.is(c.lookup(2, key(UDP), Dir.IN), slots[0]);
  t.is(c.origin(slots[0]), Dir.IN);
  t.is(c.state(slots[0]), CtState.UDP_REPLIED);
  t.is(c.aux(slots[0]), 9);
  t.is(c.idleSeconds(slots[0], 100 * S), 5);
  t.is(c.size, 1);
});

test('churn with IPv4 and IPv6 connections in a small, crowded index', (t) => {
  const ct = new Conntrack({ capacity: 64, maxPerPort: 64 });
  const rnd = (() => {
    let seed = 777;
    return (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
  })();
  const live = new Map<string, { p: Pkt; slot: number }>();
  for (let op = 0; op < 50_000; op++) {
    if (live.size < 60 && rnd(3) !== 0) {
      const v6 = rnd(2) === 0;
      const host = rnd(4);
      const p: Pkt = { proto: 17, src: v6 ? `fd00::${host}` : `10.0.0.${host}`, dst: v6 ? '2001:db8::1' : '192.0.2.1', sport: rnd(32), dport: 53 };
      const id = `${p.src}/${p.sport}`;
      if (live.has(id)) continue;
      const slot = ct.create(P, key(p), Dir.OUT, 0, 0);
      if (slot < 0) return t.fail('refused below capacity');
      live.set(id, { p, slot });
    } else if (live.size > 0) {
      const ids = [...live.keys()];
      const id = ids[rnd(ids.length)];
      ct.remove(live.get(id)!.slot);
      live.delete(id);
    }
    if (op % 1000 === 0) {
      for (const { p, slot } of live.values()) {
        if (ct.lookup(P, key(p), Dir.OUT) !== slot || ct.lookup(P, key(reply(p)), Dir.IN) !== slot) return t.fail(`lost ${p.src}:${p.sport} at ${op}`);
      }
      if (ct.size !== live.size) return t.fail(`size ${ct.size}, want ${live.size}`);
    }
  }
  t.is(ct.sweep(100_000 * S, 64), live.size);
  t.is(ct.size, 0);
});

test('a slot of capacity costs at most 61 bytes of typed arrays: 24 of record, 24 of IPv6 address words, 4 of aux, 8 of index', (t) => {
  const ct = new Conntrack({ capacity: 1 << 16 });
  t.true(ct.byteSize <= 61 * ct.capacity, `${ct.byteSize / ct.capacity} bytes per slot`);
});
