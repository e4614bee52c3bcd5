import test from 'ava';
import { ArpField, ArpOp, ArpView, parseArp, writeArpReply } from '../../src/packet/arp.js';
import { buildArpReply, buildArpRequest } from '../../src/packet/builders.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { ArpSuppressionTable, ArpVerdict, isHostIpv4, Learn } from '../../src/tunnel/arp-suppression.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const ip = mustParseIpv4Addr;

const VNI = 4242;
const S = 1000;

// A container (02:76:0a:01:00:0a, 10.1.0.10) asks who has 10.1.0.20, padded to 60 bytes.
const REQUEST = hex(`
  ff ff ff ff ff ff  02 76 0a 01 00 0a  08 06
  00 01 08 00 06 04 00 01
  02 76 0a 01 00 0a  0a 01 00 0a
  00 00 00 00 00 00  0a 01 00 14
  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`);

// What the owner, 02:76:0a:01:00:14, would answer; the padding stays.
const REPLY = hex(`
  02 76 0a 01 00 0a  02 76 0a 01 00 14  08 06
  00 01 08 00 06 04 00 02
  02 76 0a 01 00 14  0a 01 00 14
  02 76 0a 01 00 0a  0a 01 00 0a
  00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00`);

const OWNER_HI = 0x0276;
const OWNER_LO = 0x0a010014;

function table(): ArpSuppressionTable {
  const t = new ArpSuppressionTable({ agingSeconds: 10, seed: 1 });
  t.addStatic(VNI, ip('10.1.0.20'), OWNER_HI, OWNER_LO);
  return t;
}

test('a known target is answered in place, field by field', (t) => {
  const arp = table();
  const frame = Uint8Array.from(REQUEST);
  t.is(arp.suppress(VNI, frame, 0, frame.length, 14, 0), ArpVerdict.REPLIED);
  // Ethernet: back to the asker, from the owner, still ARP.
  t.is(toHex(frame.subarray(0, 6)), '02760a01000a', 'eth dst = asker');
  t.is(toHex(frame.subarray(6, 12)), '02760a010014', 'eth src = owner');
  t.is(toHex(frame.subarray(12, 14)), '0806', 'ethertype ARP');
  const v = new ArpView();
  t.true(v.reset(frame, 14, frame.length - 14));
  t.true(v.isEthernetIpv4(), 'htype 1, ptype IPv4, hlen 6, plen 4');
  t.is(v.operation(), ArpOp.Reply);
  t.is(v.shaHi16(), OWNER_HI);
  t.is(v.shaLo32(), OWNER_LO);
  t.is(v.spa(), ip('10.1.0.20'), 'sender IP = the requested address');
  t.is(v.thaHi16(), 0x0276);
  t.is(v.thaLo32(), 0x0a01000a, 'target MAC = the asker');
  t.is(v.tpa(), ip('10.1.0.10'), 'target IP = the asker');
  t.is(frame.length, 60);
  t.is(toHex(frame), toHex(REPLY), 'and nothing else changed (padding included)');
  t.deepEqual(parseArp(v), {
    operation: ArpOp.Reply,
    senderMac: '02:76:0a:01:00:14',
    senderIp: '10.1.0.20',
    targetMac: '02:76:0a:01:00:0a',
    targetIp: '10.1.0.10',
  });
});

test('answers at an offset in a larger buffer, and behind a VLAN tag', (t) => {
  const arp = table();
  const req = buildArpRequest({ srcMac: '02:76:0a:01:00:0a', srcIp: '10.1.0.10', targetIp: '10.1.0.20', vlans: [{ vid: 30 }], pad: true });
  const buf = new Uint8Array(200).fill(0xee);
  buf.set(req, 100);
  t.is(arp.suppress(VNI, buf, 100, req.length, 100 + 18, 0), ArpVerdict.REPLIED);
  t.is(toHex(buf.subarray(100, 112)), '02760a01000a' + '02760a010014');
  t.is(toHex(buf.subarray(112, 118)), '8100001e0806', 'the tag stays');
  const v = new ArpView();
  v.reset(buf, 118, 28);
  t.is(v.operation(), ArpOp.Reply);
  t.is(v.spa(), ip('10.1.0.20'));
  t.is(v.tpa(), ip('10.1.0.10'));
  t.is(buf[99], 0xee, 'nothing written before the frame');
  t.is(buf[100 + req.length], 0xee, 'nothing written after it');
});

test('what is not answered', (t) => {
  const arp = table();
  const suppress = (frame: Uint8Array, vni = VNI, arpOff = 14) => {
    const copy = Uint8Array.from(frame);
    const v = arp.suppress(vni, copy, 0, copy.length, arpOff, 0);
    if (v !== ArpVerdict.REPLIED) t.is(toHex(copy), toHex(frame), 'an unanswered frame is left as it was');
    return v;
  };
  t.is(suppress(buildArpRequest({ srcIp: '10.1.0.10', targetIp: '10.1.0.21' })), ArpVerdict.UNKNOWN);
  t.is(suppress(REQUEST, VNI + 1), ArpVerdict.UNKNOWN, 'another segment knows nothing of it');
  t.is(suppress(buildArpRequest({ srcIp: '10.1.0.20', targetIp: '10.1.0.20' })), ArpVerdict.ANNOUNCEMENT, 'gratuitous ARP is flooded');
  t.is(
    suppress(buildArpRequest({ srcMac: '02:76:0a:01:00:14', srcIp: '0.0.0.0', targetIp: '10.1.0.20' })),
    ArpVerdict.SELF,
    'the owner probing its own address is not told of a conflict',
  );
  t.is(suppress(buildArpReply({ srcIp: '10.1.0.10', dstIp: '10.1.0.20' })), ArpVerdict.NOT_REQUEST);
  const badSize = Uint8Array.from(REQUEST);
  badSize[14 + ArpField.HLEN] = 8;
  t.is(suppress(badSize), ArpVerdict.NOT_REQUEST);
  const badType = Uint8Array.from(REQUEST);
  badType[14 + ArpField.PTYPE] = 0x86;
  t.is(suppress(badType), ArpVerdict.NOT_REQUEST);
  t.is(suppress(REQUEST.subarray(0, 41)), ArpVerdict.NOT_REQUEST, 'cut short');
  t.is(suppress(REQUEST, VNI, 40), ArpVerdict.NOT_REQUEST, 'ARP offset beyond the frame');
  t.is(suppress(REQUEST, VNI, -1), ArpVerdict.NOT_REQUEST, 'ARP offset before the frame');
});

test('a learned entry answers until it ages out', (t) => {
  const arp = new ArpSuppressionTable({ agingSeconds: 10, seed: 2 });
  t.is(arp.learn(VNI, ip('10.1.0.20'), OWNER_HI, OWNER_LO, 0), Learn.NEW);
  let frame = Uint8Array.from(REQUEST);
  t.is(arp.suppress(VNI, frame, 0, frame.length, 14, 10 * S), ArpVerdict.REPLIED);
  frame = Uint8Array.from(REQUEST);
  t.is(arp.suppress(VNI, frame, 0, frame.length, 14, 10 * S + 1), ArpVerdict.UNKNOWN);
  t.is(arp.counters().aged, 1);
});

test('static entries win over learned ones', (t) => {
  const arp = table();
  t.is(arp.learn(VNI, ip('10.1.0.20'), 0x0276, 0x0bad0bad, 0), Learn.STATIC_HELD);
  t.is(arp.counters().conflicts, 1);
  const slot = arp.lookup(VNI, ip('10.1.0.20'), 0);
  t.is(arp.macLoAt(slot), OWNER_LO);
  t.true(arp.isStaticAt(slot));
});

test('learns from replies and gratuitous ARP, not from other requests or probes', (t) => {
  const arp = new ArpSuppressionTable({ seed: 3 });
  const learn = (frame: Uint8Array, now = 0) => arp.learnFromArp(VNI, frame, 0, frame.length, 14, now);
  t.is(learn(buildArpReply({ srcMac: '02:76:0a:01:00:14', srcIp: '10.1.0.20', dstIp: '10.1.0.10' })), Learn.NEW);
  t.is(learn(buildArpRequest({ srcMac: '02:76:0a:01:00:15', srcIp: '10.1.0.21', targetIp: '10.1.0.21' })), Learn.NEW, 'gratuitous');
  t.is(learn(buildArpRequest({ srcMac: '02:76:0a:01:00:16', srcIp: '10.1.0.22', targetIp: '10.1.0.1' })), Learn.INVALID, 'a plain request');
  t.is(learn(buildArpReply({ srcMac: '02:76:0a:01:00:17', srcIp: '0.0.0.0' })), Learn.INVALID, 'no address');
  t.is(learn(buildArpReply({ srcMac: '01:00:5e:00:00:01', srcIp: '10.1.0.23' })), Learn.INVALID, 'multicast MAC');
  t.is(learn(buildArpReply({ srcMac: '02:76:0a:01:00:18', srcIp: '224.0.0.5' })), Learn.INVALID, 'multicast IP');
  t.is(learn(REQUEST.subarray(0, 30)), Learn.INVALID, 'cut short');
  // A gratuitous ARP from the new holder moves the address.
  t.is(learn(buildArpRequest({ srcMac: '02:76:0a:01:00:99', srcIp: '10.1.0.20', targetIp: '10.1.0.20' }), 5), Learn.MOVED);
  t.deepEqual(
    arp.entries(5 * S).map((e) => [e.ip, e.mac, e.kind]),
    [
      ['10.1.0.20', '02:76:0a:01:00:99', 'learned'],
      ['10.1.0.21', '02:76:0a:01:00:15', 'learned'],
    ],
  );
});

test('control-plane calls check their input; flush and listing', (t) => {
  const arp = new ArpSuppressionTable({ seed: 4 });
  t.throws(() => arp.addStatic(0, ip('10.0.0.1'), 0x0276, 1), { instanceOf: RangeError });
  t.throws(() => arp.addStatic(VNI, ip('127.0.0.1'), 0x0276, 1), { instanceOf: RangeError, message: /127\.0\.0\.1/ });
  t.throws(() => arp.addStatic(VNI, ip('255.255.255.255'), 0x0276, 1), { instanceOf: RangeError });
  t.throws(() => arp.addStatic(VNI, ip('10.0.0.1'), 0xffff, 0xffffffff), { instanceOf: RangeError, message: /unicast MAC/ });
  t.true(isHostIpv4(ip('10.0.0.1')));
  t.false(isHostIpv4(ip('0.1.2.3')));
  t.true(arp.addStatic(2, ip('10.0.0.2'), 0x0276, 2));
  t.true(arp.addStatic(1, ip('10.0.0.9'), 0x0276, 9));
  t.true(arp.addStatic(1, ip('10.0.0.10'), 0x0276, 10));
  arp.learn(1, ip('10.0.0.3'), 0x0276, 3, 0);
  t.deepEqual(arp.entries(2 * S), [
    { vni: 1, ip: '10.0.0.3', mac: '02:76:00:00:00:03', kind: 'learned', ageSeconds: 2 },
    { vni: 1, ip: '10.0.0.9', mac: '02:76:00:00:00:09', kind: 'static', ageSeconds: null },
    { vni: 1, ip: '10.0.0.10', mac: '02:76:00:00:00:0a', kind: 'static', ageSeconds: null },
    { vni: 2, ip: '10.0.0.2', mac: '02:76:00:00:00:02', kind: 'static', ageSeconds: null },
  ]);
  t.false(arp.forget(1, ip('10.0.0.9')));
  t.true(arp.forget(1, ip('10.0.0.3')));
  t.true(arp.removeStatic(1, ip('10.0.0.9')));
  t.is(arp.flushVni(1), 1);
  t.is(arp.size, 1);
  t.is(arp.flush({ kind: 'learned' }), 0);
  t.is(arp.flush(), 1);
});

test('writeArpReply is the bare rewrite: it checks nothing', (t) => {
  const frame = Uint8Array.from(REQUEST);
  writeArpReply(frame, 0, 14, OWNER_HI, OWNER_LO);
  t.is(toHex(frame), toHex(REPLY));
});

test('addresses and MACs above 2^31 (192.168/16, a high MAC half) take the int32 path intact', (t) => {
  const arp = new ArpSuppressionTable({ seed: 5 });
  const reply = buildArpReply({ srcMac: '02:76:fe:dc:ba:98', srcIp: '192.168.7.20', dstIp: '192.168.7.10' });
  t.is(arp.learnFromArp(VNI, reply, 0, reply.length, 14, 0), Learn.NEW);
  const slot = arp.lookup(VNI, ip('192.168.7.20'), 0);
  t.is(arp.macLoAt(slot), 0xfedcba98);
  t.is(arp.lookup(VNI, ip('192.168.7.20') | 0, 0), slot);
  const req = buildArpRequest({ srcMac: '02:76:00:00:00:01', srcIp: '192.168.7.10', targetIp: '192.168.7.20' });
  t.is(arp.suppress(VNI, req, 0, req.length, 14, 0), ArpVerdict.REPLIED);
  const v = new ArpView();
  t.true(v.reset(req, 14, 28));
  t.deepEqual(parseArp(v), {
    operation: ArpOp.Reply,
    senderMac: '02:76:fe:dc:ba:98',
    senderIp: '192.168.7.20',
    targetMac: '02:76:00:00:00:01',
    targetIp: '192.168.7.10',
  });
  const selfProbe = buildArpRequest({ srcMac: '02:76:fe:dc:ba:98', srcIp: '0.0.0.0', targetIp: '192.168.7.20' });
  t.is(arp.suppress(VNI, selfProbe, 0, selfProbe.length, 14, 0), ArpVerdict.SELF);
});
