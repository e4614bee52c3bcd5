import test from 'ava';
import { ArpOp, ArpView } from '../../src/packet/arp.js';
import { buildArpReply, buildArpRequest, buildEthernet } from '../../src/packet/builders.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { Learn } from '../../src/tunnel/aging-table.js';
import { ArpVerdict } from '../../src/tunnel/arp-suppression.js';
import { OverlaySegment, OverlaySegments } from '../../src/tunnel/overlay-segment.js';
import { DecapVerdict, encapHeader } from '../../src/tunnel/vxlan-encap.js';

const ip = mustParseIpv4Addr;
const P1 = ip('192.0.2.11');
const P2 = ip('192.0.2.12');
const P3 = ip('203.0.113.13');
const STRANGER = ip('192.0.2.99');

function host(): OverlaySegments {
  return new OverlaySegments({ vtep: { seed: 1 }, arp: { seed: 2 } });
}

/** A VXLAN datagram (header + inner frame) at offset 16 of a fresh buffer, as an rx slot would hold it. */
function datagram(vni: number, inner: Uint8Array): { buf: Uint8Array; off: number; len: number } {
  const buf = new Uint8Array(24 + inner.length);
  buf.set(inner, 24);
  const off = encapHeader(buf, 24, vni);
  return { buf, off, len: 8 + inner.length };
}

const FRAME = buildEthernet({ srcMac: '02:76:0b:00:00:05', dstMac: 'ff:ff:ff:ff:ff:ff', etherType: 0x0800, payload: new Uint8Array(20) });

test('peers: sorted, deduplicated, binary-searched', (t) => {
  const s = host().add(100, { peers: ['203.0.113.13', P1, '192.0.2.12', P1] });
  t.deepEqual([...s.peers], [P1, P2, P3]);
  t.is(s.peerCount, 3);
  t.true(s.isPeer(P1));
  t.true(s.isPeer(P2));
  t.true(s.isPeer(P3), 'above 2^31');
  t.true(P3 > 0x7fffffff && (P3 | 0) < 0);
  t.true(s.isPeer(P3 | 0), 'or as its int32 bit pattern, as the data path passes it');
  t.true(s.isPeer(P1 | 0));
  t.false(s.isPeer(STRANGER | 0));
  t.false(s.isPeer(STRANGER));
  t.false(s.isPeer(0));
  t.false(s.isPeer(0xffffffff));
  t.false(s.addPeer(P2));
  t.true(s.addPeer('10.0.0.1'));
  t.deepEqual([...s.peers], [ip('10.0.0.1'), P1, P2, P3]);
  t.true(s.removePeer('10.0.0.1'));
  t.false(s.removePeer('10.0.0.1'));
  t.true(s.removePeer(P3 | 0), 'by its int32 bit pattern too');
  t.deepEqual([...s.peers], [P1, P2]);
  t.true(new OverlaySegments().add(5).peerCount === 0);
});

test('peer input is checked and a bad list changes nothing', (t) => {
  const s = host().add(100, { peers: [P1], maxPeers: 2 });
  t.throws(() => s.setPeers([P1, '239.0.0.1']), { instanceOf: RangeError, message: /239\.0\.0\.1/ });
  t.throws(() => s.setPeers(['0.0.0.0']), { instanceOf: RangeError });
  t.throws(() => s.setPeers(['not-an-ip']), { instanceOf: RangeError });
  t.throws(() => s.setPeers([P1, P2, P3]), { instanceOf: RangeError, message: /at most 2/ });
  t.deepEqual([...s.peers], [P1]);
});

test('a peer that leaves takes its VTEP entries, static ones too, in its own VNI only', (t) => {
  const h = host();
  const a = h.add(100, { peers: [P1, P2] });
  const b = h.add(200, { peers: [P1] });
  t.true(a.addEndpoint({ mac: '02:76:0b:00:00:01', ip: '10.9.0.1', vtep: '192.0.2.11' }));
  a.learnSource(FRAME, 0, P1, 0);
  a.learnSource(buildEthernet({ srcMac: '02:76:0b:00:00:06', etherType: 0x0800, payload: new Uint8Array(0) }), 0, P2, 0);
  b.learnSource(FRAME, 0, P1, 0);
  t.is(h.vteps.size, 4);
  t.deepEqual(a.setPeers([P2, P3]), { added: ['203.0.113.13'], removed: ['192.0.2.11'] });
  t.deepEqual(
    h.vteps.entries(0).map((e) => [e.vni, e.mac, e.vtep]),
    [
      [100, '02:76:0b:00:00:06', '192.0.2.12'],
      [200, '02:76:0b:00:00:05', '192.0.2.11'],
    ],
  );
  t.is(h.arp.size, 1, 'the ARP entry stays: the service removes the endpoint');
});

test('fillReplication writes one descriptor per peer for the same datagram', (t) => {
  const s = host().add(100, { peers: [P3, P1, P2] });
  const offsets = new Uint32Array(8);
  const lengths = new Uint32Array(8);
  const addrs = new Uint32Array(8);
  const ports = new Uint16Array(8);
  t.is(s.fillReplication(120, 98, 4789, offsets, lengths, addrs, ports, 2), 3);
  t.deepEqual([...offsets], [0, 0, 120, 120, 120, 0, 0, 0]);
  t.deepEqual([...lengths], [0, 0, 98, 98, 98, 0, 0, 0]);
  t.deepEqual([...addrs], [0, 0, P1, P2, P3, 0, 0, 0]);
  t.deepEqual([...ports], [0, 0, 4789, 4789, 4789, 0, 0, 0]);
  t.is(s.fillReplication(500, 60, 4789, offsets, lengths, addrs, ports, 6), 2, 'stops at the end of the arrays');
  t.deepEqual([...addrs.subarray(6)], [P1, P2]);
  t.is(s.fillReplication(500, 60, 4789, offsets, lengths, addrs, ports, 8), 0);
  t.is(s.fillReplication(500, 60, 4789, offsets, lengths, addrs, ports, 9), 0);
  t.is(s.counters().replicated, 5);
});

test('admit: header checks, VNI served, sender a peer; every verdict counted', (t) => {
  const h = host();
  const a = h.add(100, { peers: [P1, P3] });
  h.add(200, { peers: [P2] });
  const ok = datagram(100, FRAME);
  t.is(h.admit(ok.buf, ok.off, ok.len, P1), DecapVerdict.OK);
  t.is(h.matched, a);
  t.is(h.admit(ok.buf, ok.off, ok.len, P3), DecapVerdict.OK);
  t.is(h.admit(ok.buf, ok.off, ok.len, P2), DecapVerdict.NOT_PEER, 'a peer of another VNI is a stranger here');
  t.is(h.matched, null);
  t.is(h.admit(ok.buf, ok.off, ok.len, STRANGER), DecapVerdict.NOT_PEER);
  const unknown = datagram(300, FRAME);
  t.is(h.admit(unknown.buf, unknown.off, unknown.len, P1), DecapVerdict.UNKNOWN_VNI);
  t.is(h.matched, null);
  const noFlag = datagram(100, FRAME);
  noFlag.buf[noFlag.off] = 0;
  t.is(h.admit(noFlag.buf, noFlag.off, noFlag.len, P1), DecapVerdict.BAD_FLAGS);
  t.is(h.admit(ok.buf, ok.off, 7, P1), DecapVerdict.SHORT_HEADER);
  t.is(h.admit(ok.buf, ok.off, 8 + 13, P1), DecapVerdict.TRUNCATED_INNER);
  const c = h.counters();
  t.deepEqual(c.decap, { ok: 2, shortHeader: 1, badFlags: 1, truncatedInner: 1, unknownVni: 1, notPeer: 2 });
  t.deepEqual(
    c.segments.map((s) => [s.vni, s.notPeer]),
    [
      [100, 2],
      [200, 0],
    ],
  );
});

test('flood and learn: a decapsulated frame teaches where its source MAC lives', (t) => {
  const h = host();
  const s = h.add(100, { peers: [P1, P2] });
  const d = datagram(100, FRAME);
  t.is(h.admit(d.buf, d.off, d.len, P1), DecapVerdict.OK);
  t.is(h.matched!.learnSource(d.buf, d.off + 8, P1, 0), Learn.NEW);
  const slot = s.lookupVtep(0x0276, 0x0b000005, 1);
  t.true(slot >= 0);
  t.is(h.vteps.vtepAt(slot), P1);
  t.is(h.get(200), undefined);
  t.is(s.learnSource(d.buf, d.off + 8, P2, 2), Learn.MOVED, 'the MAC moved to another host');
  t.is(h.vteps.counters().moved, 1);
});

test('ARP: a local request is answered from a remote endpoint pushed by the control plane', (t) => {
  const s = host().add(100, { peers: [P1] });
  t.true(s.addEndpoint({ mac: '02:76:0b:00:00:20', ip: '10.9.0.20', vtep: '192.0.2.11' }));
  const req = buildArpRequest({ srcMac: '02:76:0b:00:00:0a', srcIp: '10.9.0.10', targetIp: '10.9.0.20', pad: true });
  t.is(s.suppressArp(req, 0, req.length, 14, 0), ArpVerdict.REPLIED);
  const v = new ArpView();
  v.reset(req, 14, 28);
  t.is(v.operation(), ArpOp.Reply);
  t.is(v.shaLo32(), 0x0b000020);
  const miss = buildArpRequest({ srcMac: '02:76:0b:00:00:0a', srcIp: '10.9.0.10', targetIp: '10.9.0.21' });
  t.is(s.suppressArp(miss, 0, miss.length, 14, 0), ArpVerdict.UNKNOWN);
  t.like(s.counters(), { arpReplied: 1, arpUnknown: 1 });
  const slot = s.lookupVtep(0x0276, 0x0b000020, 0);
  t.true(slot >= 0 && s.vteps.isStaticAt(slot));
  t.true(s.removeEndpoint({ mac: '02:76:0b:00:00:20', ip: '10.9.0.20' }));
  t.false(s.removeEndpoint({ mac: '02:76:0b:00:00:20', ip: '10.9.0.20' }));
  const again = buildArpRequest({ srcMac: '02:76:0b:00:00:0a', srcIp: '10.9.0.10', targetIp: '10.9.0.20' });
  t.is(s.suppressArp(again, 0, again.length, 14, 0), ArpVerdict.UNKNOWN);
});

test('ARP learning from peers only when the segment asks for it', (t) => {
  const h = host();
  const off = h.add(100, { peers: [P1] });
  const on = h.add(200, { peers: [P1], learnArp: true });
  const reply = buildArpReply({ srcMac: '02:76:0b:00:00:30', srcIp: '10.9.0.30', dstIp: '10.9.0.10' });
  t.is(off.learnFromArp(reply, 0, reply.length, 14, 0), Learn.REFUSED);
  t.is(on.learnFromArp(reply, 0, reply.length, 14, 0), Learn.NEW);
  t.is(on.counters().arpLearned, 1);
  t.is(h.arp.lookup(100, ip('10.9.0.30'), 0), -1, 'per-VNI');
  t.true(h.arp.lookup(200, ip('10.9.0.30'), 0) >= 0);
});

test('addEndpoint checks its input and undoes half an add at a full ARP table', (t) => {
  const h = new OverlaySegments({ vtep: { maxStatic: 4, seed: 3 }, arp: { maxStatic: 1, seed: 4 } });
  const s = h.add(100, { peers: [P1] });
  t.throws(() => s.addEndpoint({ mac: '02:76:0b:00:00:01', vtep: '192.0.2.99' }), { instanceOf: RangeError, message: /not a peer/ });
  t.throws(() => s.addEndpoint({ mac: 'nope', vtep: '192.0.2.11' }), { instanceOf: RangeError });
  t.throws(() => s.addEndpoint({ mac: '02:76:0b:00:00:01', ip: '127.0.0.1', vtep: '192.0.2.11' }), { instanceOf: RangeError });
  t.is(h.vteps.size, 0, 'nothing added by a refused call');
  t.true(s.addEndpoint({ mac: '02:76:0b:00:00:01', ip: '10.9.0.1', vtep: '192.0.2.11' }));
  t.false(s.addEndpoint({ mac: '02:76:0b:00:00:02', ip: '10.9.0.2', vtep: '192.0.2.11' }), 'the ARP table is full');
  t.is(h.vteps.size, 1, 'the MAC entry of the refused endpoint was taken back');
  t.true(s.addEndpoint({ mac: '02:76:0b:00:00:02', vtep: '192.0.2.11' }), 'without an IP it fits');
});

test('the registry: VNIs are unique and in range; removing one forgets its entries', (t) => {
  const h = host();
  const s = h.add(100, { peers: [P1] });
  t.throws(() => h.add(100), { instanceOf: RangeError, message: /already/ });
  t.throws(() => h.add(0), { instanceOf: RangeError });
  t.throws(() => h.add(1 << 24), { instanceOf: RangeError });
  t.throws(() => new OverlaySegment(0, h.vteps, h.arp), { instanceOf: RangeError });
  h.add(7);
  t.deepEqual(
    h.list().map((x) => x.vni),
    [7, 100],
  );
  t.true(h.has(100));
  s.addEndpoint({ mac: '02:76:0b:00:00:01', ip: '10.9.0.1', vtep: '192.0.2.11' });
  s.learnSource(FRAME, 0, P1, 0);
  t.true(h.remove(100));
  t.false(h.remove(100));
  t.false(h.has(100));
  t.is(h.vteps.size, 0);
  t.is(h.arp.size, 0);
  const d = datagram(100, FRAME);
  t.is(h.admit(d.buf, d.off, d.len, P1), DecapVerdict.UNKNOWN_VNI);
});

test('sweep ages both tables', (t) => {
  const h = new OverlaySegments({ vtep: { agingSeconds: 1, seed: 5 }, arp: { agingSeconds: 1, seed: 6 } });
  const s = h.add(100, { peers: [P1], learnArp: true });
  s.learnSource(FRAME, 0, P1, 0);
  const reply = buildArpReply({ srcMac: '02:76:0b:00:00:30', srcIp: '10.9.0.30' });
  s.learnFromArp(reply, 0, reply.length, 14, 0);
  t.is(h.sweep(500), 0);
  t.is(h.sweep(1001), 2);
  t.is(h.vteps.size + h.arp.size, 0);
});
