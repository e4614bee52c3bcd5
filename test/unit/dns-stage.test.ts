/**
 * The DNS stage on a switch over recording I/O: queries from a container to
 * the resolver address are answered in place (UDP and stateless TCP), other
 * names are handed over and answered with dnsAnswerFrame, malformed ones are
 * dropped and counted. Every answer is checked by parsing the bytes that
 * were written: Ethernet, IPv4 and its checksum, UDP or TCP and a complete
 * checksum, the DNS message.
 *
 */
import test, { type ExecutionContext } from 'ava';
import { buildArpRequest, buildIcmp4Echo, buildTcp4, buildUdp4 } from '../../src/packet/builders.js';
import { internetChecksum, pseudoSumV4 } from '../../src/packet/checksum.js';
import {
  DnsAnswerWriter,
  DnsClass,
  DnsQueryParser,
  DnsRcode,
  DnsType,
  DnsVerdict,
  dnsQueryLength,
  emitDnsQuery,
  frameDnsTcp,
  parseDnsResponse,
  type DnsResponseRepr,
} from '../../src/packet/dns.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { formatMac } from '../../src/packet/ethernet.js';
import { formatIpv4Addr } from '../../src/packet/ipv4.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { VnetFlags, emitVnet } from '../../src/packet/vnet.js';
import { dnsAnswerFrame, dnsQueryOfFrame } from '../../src/switch/stages/dns-stage.js';
import { DIR_OUT } from '../../src/vfp/compile.js';
import { mulberry32 } from './helpers/random.js';
import type { Sent } from './helpers/recording-io.js';
import { frameOf, switchRig } from './helpers/switch-rig.js';

const NET = 1;
const RESOLVER = { ip: '10.88.0.1', mac: '02:76:0a:58:00:01' };
const C0 = { mac: '02:76:0a:58:00:0a', ip: '10.88.0.10' };
const C1 = { mac: '02:76:0a:58:00:0b', ip: '10.88.0.11' };
const MANY = Array.from({ length: 40 }, (_, i) => `10.88.1.${i + 1}`);

interface Handed {
  networkId: number;
  portId: number;
  frame: Uint8Array;
}

function setup(opts: { sink?: boolean; forwardPerSecond?: number; nat?: boolean; ownsAddress?: boolean } = {}) {
  const handed: Handed[] = [];
  const sink = opts.sink === false ? {} : { dnsQuery: (networkId: number, portId: number, frame: Uint8Array) => void handed.push({ networkId, portId, frame }) };
  const rig = switchRig(sink);
  const dns = { resolverIp: RESOLVER.ip, resolverMac: RESOLVER.mac, forwardPerSecond: opts.forwardPerSecond, ownsAddress: opts.ownsAddress };
  rig.sw.addNetwork(
    NET,
    'mynet',
    opts.nat
      ? {
          dns,
          nat: {
            subnet: '10.88.0.0/24',
            gatewayIp: RESOLVER.ip,
            gatewayMac: RESOLVER.mac,
            externalIp: '100.127.0.2',
            externalMac: '02:76:64:7f:00:02',
            hostMac: '02:76:64:7f:00:01',
            portFirst: 1024,
            portLast: 65535,
          },
        }
      : { dns },
  );
  const refused = rig.sw.setNames(NET, [
    { owner: 'ep-0', name: 'web', ipv4: [C0.ip], ipv6: ['fd00::a'] },
    { owner: 'lb-1', name: 'api', ipv4: ['10.88.0.100'] },
    { owner: 'ep-9', name: 'many', ipv4: MANY },
  ]);
  if (refused !== null) throw new Error(refused);
  rig.sw.addPort({ portId: 0, networkId: NET, fd: 100, name: 'c0', ...C0 });
  rig.sw.addPort({ portId: 1, networkId: NET, fd: 101, name: 'c1', ...C1 });
  const counters = () => rig.sw.stages(NET).find((s) => s.name === 'dns')!.counters;
  return { ...rig, handed, counters };
}

function query(name: string, type: number = DnsType.A, opts: { id?: number; edns?: number; cls?: number } = {}): Uint8Array {
  const repr = { id: opts.id ?? 0x1234, recursionDesired: true, name, type, class: opts.cls ?? DnsClass.IN, edns: opts.edns ? { payloadSize: opts.edns, version: 0, dnssecOk: false } : null };
  const buf = new Uint8Array(dnsQueryLength(repr));
  emitDnsQuery(repr, buf, 0);
  return buf;
}

const udpTo = (payload: Uint8Array, sport = 40000) =>
  buildUdp4({ srcMac: C0.mac, dstMac: RESOLVER.mac, srcIp: C0.ip, dstIp: RESOLVER.ip, srcPort: sport, dstPort: 53, payload });

const tcpTo = (flags: number, seq: number, ack: number, payload: Uint8Array = new Uint8Array(0), opts: { sport?: number; options?: Uint8Array } = {}) =>
  buildTcp4({ srcMac: C0.mac, dstMac: RESOLVER.mac, srcIp: C0.ip, dstIp: RESOLVER.ip, srcPort: opts.sport ?? 41000, dstPort: 53, flags, seq, ack, payload, options: opts.options });

/** The IPv4 reply from the resolver back to C0 on port 0: addresses, MACs, header checksum; returns where L4 starts and its length. */
function checkIp(t: ExecutionContext, s: Sent, protocol: number): { f: Buffer; l4Len: number } {
  t.is(s.fd, 100, 'back out of the asking port');
  t.true(s.wire.subarray(0, 10).every((b) => b === 0), 'a clean vnet header: complete checksums, no segmentation');
  const f = frameOf(s);
  t.is(formatMac(f, 0), C0.mac);
  t.is(formatMac(f, 6), RESOLVER.mac, "from the resolver's MAC");
  t.is(f.readUInt16BE(12), 0x0800);
  t.is(f[14], 0x45);
  t.is(internetChecksum(f, 14, 20), 0, 'IPv4 header checksum');
  t.is(14 + f.readUInt16BE(16), f.length, 'total length is the frame');
  t.is(f[23], protocol);
  t.is(formatIpv4Addr(f.readUInt32BE(26)), RESOLVER.ip);
  t.is(formatIpv4Addr(f.readUInt32BE(30)), C0.ip);
  const l4Len = f.readUInt16BE(16) - 20;
  t.is(internetChecksum(f, 34, l4Len, pseudoSumV4(f.readUInt32BE(26), f.readUInt32BE(30), protocol, l4Len)), 0, 'a complete L4 checksum');
  return { f, l4Len };
}

function udpAnswer(t: ExecutionContext, sent: Sent[], sport = 40000): DnsResponseRepr {
  t.is(sent.length, 1);
  const { f, l4Len } = checkIp(t, sent[0], 17);
  t.is(f.readUInt16BE(34), 53);
  t.is(f.readUInt16BE(36), sport);
  t.is(f.readUInt16BE(38), l4Len, 'UDP length');
  const dns = parseDnsResponse(f, 42, l4Len - 8);
  t.truthy(dns);
  return dns!;
}

interface TcpOut {
  seq: number;
  ack: number;
  flags: number;
  window: number;
  options: Buffer;
  payload: Buffer;
}

function tcpOut(t: ExecutionContext, sent: Sent[], sport = 41000): TcpOut {
  t.is(sent.length, 1);
  const { f } = checkIp(t, sent[0], 6);
  t.is(f.readUInt16BE(34), 53);
  t.is(f.readUInt16BE(36), sport);
  const hl = (f[46] >>> 4) * 4;
  return { seq: f.readUInt32BE(38), ack: f.readUInt32BE(42), flags: f[47], window: f.readUInt16BE(48), options: f.subarray(54, 34 + hl), payload: f.subarray(34 + hl) };
}

const records = (r: DnsResponseRepr) => r.answers.map((a) => `${a.type === DnsType.A ? 'A' : a.type === DnsType.AAAA ? 'AAAA' : 'PTR'} ${a.data}`);

test("a container's A query for a name of the network is answered in place, as NAME and NAME.NETWORK, without case", (t) => {
  const { send, counters, drops } = setup();
  for (const name of ['web', 'web.mynet', 'WEB.MyNet.']) {
    const r = udpAnswer(t, send(0, udpTo(query(name, DnsType.A, { id: 0xbeef }))));
    t.is(r.id, 0xbeef);
    t.is(r.rcode, DnsRcode.NOERROR);
    t.true(r.authoritative);
    t.true(r.recursionDesired);
    t.true(r.recursionAvailable);
    t.is(r.question?.name, normalize(name));
    t.deepEqual(records(r), ['A 10.88.0.10']);
    t.is(r.answers[0].ttl, 10);
  }
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query('api'))))), ['A 10.88.0.100'], 'a load balancer name is its VIP');
  t.is(counters().queriesAnswered, 4);
  t.is(drops(0, DropReason.dnsMalformed), 0);
});

function normalize(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

test('AAAA, PTR for IPv4 and IPv6, NODATA, NXDOMAIN under the network, REFUSED for another class', (t) => {
  const { send, counters } = setup();
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query('web', DnsType.AAAA))))), ['AAAA fd00::a']);
  const nodata = udpAnswer(t, send(0, udpTo(query('api', DnsType.AAAA))));
  t.is(nodata.rcode, DnsRcode.NOERROR);
  t.is(nodata.answers.length, 0, 'the VIP has no IPv6 address: NODATA');
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query('web', DnsType.ANY))))), ['A 10.88.0.10', 'AAAA fd00::a']);
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query('10.0.88.10.in-addr.arpa', DnsType.PTR))))), ['PTR web.mynet']);
  const v6 = `a.${'0.'.repeat(28)}0.d.f.ip6.arpa`;
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query(v6, DnsType.PTR))))), ['PTR web.mynet']);
  const nx = udpAnswer(t, send(0, udpTo(query('db.mynet'))));
  t.is(nx.rcode, DnsRcode.NXDOMAIN);
  t.true(nx.authoritative);
  const apex = udpAnswer(t, send(0, udpTo(query('mynet', DnsType.SOA))));
  t.is(apex.rcode, DnsRcode.NOERROR);
  t.is(apex.answers.length, 0);
  const chaos = udpAnswer(t, send(0, udpTo(query('version.bind', DnsType.TXT, { cls: DnsClass.CH }))));
  t.is(chaos.rcode, DnsRcode.REFUSED);
  const c = counters();
  t.is(c.queriesAnswered, 8);
  t.is(c.nxdomain, 1);
  t.is(c.forwarded, 0);
});

test('an answer may grow the frame, up to what the query allows: 512 bytes without EDNS (then TC), its EDNS size with it', (t) => {
  const { send } = setup();
  const plain = udpTo(query('many'));
  const out = send(0, plain);
  const r = udpAnswer(t, out);
  t.true(r.truncated, '40 addresses do not fit in 512 bytes');
  t.is(r.answers.length, Math.floor((512 - 22) / 16), 'header 12, question 10, 16 per record');
  t.true(frameOf(out[0]).length - 42 <= 512);
  t.true(frameOf(out[0]).length > plain.length, 'the frame grew');
  const edns = udpAnswer(t, send(0, udpTo(query('many', DnsType.A, { edns: 4096 }))));
  t.false(edns.truncated);
  t.is(edns.answers.length, 40);
  t.deepEqual(edns.edns, { payloadSize: 1232, version: 0, dnssecOk: false });
});

test('a query with a partial checksum and offload flags gets an answer with a complete checksum and a clean vnet header', (t) => {
  const { send, io } = setup();
  const frame = udpTo(query('web'));
  const out = send(0, frame, (vnetAt) => {
    // What the container's kernel hands over with tx checksum offload: NEEDS_CSUM at the UDP checksum.
    emitVnet({ flags: VnetFlags.NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 6 }, io.buffer, vnetAt);
  });
  t.deepEqual(records(udpAnswer(t, out)), ['A 10.88.0.10']);
});

test('names that are not the network\'s are handed to the control plane, whose answer dnsAnswerFrame turns into the reply', (t) => {
  const { send, handed, drops, counters } = setup();
  const frame = udpTo(query('example.com', DnsType.A, { id: 77, edns: 1232 }));
  t.deepEqual(send(0, frame), [], 'nothing answered in the data path');
  t.is(handed.length, 1);
  t.is(handed[0].networkId, NET);
  t.is(handed[0].portId, 0);
  t.deepEqual(Buffer.from(handed[0].frame), frame, 'a copy of the frame');
  t.is(drops(0, DropReason.dnsHandedOver), 1);
  t.is(counters().forwarded, 1);

  const q = dnsQueryOfFrame(handed[0].frame)!;
  t.is(q.transport, 'udp');
  // What the host's resolvers might answer, with an id of their own.
  const upstream = upstreamAnswer(q.message, 4242, ['93.184.216.34']);
  const reply = dnsAnswerFrame(handed[0].frame, upstream, RESOLVER.mac)!;
  const r = udpAnswer(t, [{ fd: 100, wire: Buffer.concat([Buffer.alloc(10), Buffer.from(reply)]) }]);
  t.is(r.id, 77, "the query's id, whatever upstream used");
  t.deepEqual(records(r), ['A 93.184.216.34']);

  // Too big for what the query allows: header and question with TC, so the client asks over TCP.
  const small = udpTo(query('big.example.com', DnsType.A, { id: 78 }));
  send(0, small);
  const big = upstreamAnswer(dnsQueryOfFrame(handed[1].frame)!.message, 1, Array.from({ length: 60 }, (_, i) => `192.0.2.${i}`));
  t.true(big.length > 512);
  const cut = udpAnswer(t, [{ fd: 100, wire: Buffer.concat([Buffer.alloc(10), Buffer.from(dnsAnswerFrame(handed[1].frame, big, RESOLVER.mac)!)]) }]);
  t.true(cut.truncated);
  t.is(cut.answers.length, 0);
  t.is(cut.question?.name, 'big.example.com');
  t.is(dnsAnswerFrame(handed[1].frame, new Uint8Array(5), RESOLVER.mac), null, 'no readable answer: no frame');
  t.is(dnsAnswerFrame(buildArpRequest({}), big, RESOLVER.mac), null, 'not a query frame');
});

/** A response to `message` with A records, as another resolver would write it (no size limit). */
function upstreamAnswer(message: Uint8Array, id: number, addrs: string[]): Uint8Array {
  const p = new DnsQueryParser();
  if (p.parse(message, 0, message.length) !== DnsVerdict.OK) throw new Error('not a query');
  const out = new Uint8Array(4096);
  const w = new DnsAnswerWriter();
  w.begin(out, 0, 4096, p, DnsRcode.NOERROR, false);
  for (const a of addrs) w.addA(300, a.split('.').reduce((v, o) => v * 256 + Number(o), 0));
  const n = w.finish();
  out[0] = id >>> 8;
  out[1] = id & 0xff;
  return out.slice(0, n);
}

test('the hand-over is held to a rate; without a control plane to hand to, SERVFAIL', (t) => {
  const { send, handed, drops, counters } = setup({ forwardPerSecond: 3 });
  for (let i = 0; i < 5; i++) send(0, udpTo(query(`host${i}.example.com`)));
  t.is(handed.length, 3);
  t.is(drops(0, DropReason.dnsOverRate), 2);
  t.is(counters().rateDropped, 2);
  const lone = setup({ sink: false });
  const r = udpAnswer(t, lone.send(0, udpTo(query('example.com'))));
  t.is(r.rcode, DnsRcode.SERVFAIL);
  t.false(r.authoritative);
});

test('malformed queries are dropped and counted, never answered; another opcode gets NOTIMP, its header alone', (t) => {
  const { send, drops, counters } = setup();
  const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
  const bad = [
    hex('1234 0100 0001 0000 0000 0000 01 61 c00c 0001 0001'), // compression loop
    hex('1234 0100 0001 0000 0000 0000 c0ff 0001 0001'), // pointer out of bounds
    hex('1234 0100 ffff 0000 0000 0000 01 61 00 0001 0001'), // 65535 questions
    hex('1234 0100 0001 0000 0000 0000 05 61'), // truncated
    hex('1234 8180 0001 0000 0000 0000 01 61 00 0001 0001'), // a response
    hex('1234 0100 0001'), // no header
  ];
  for (const payload of bad) t.deepEqual(send(0, udpTo(payload)), []);
  // A UDP length beyond the packet, and a fragment.
  const longUdp = udpTo(query('web'));
  longUdp.writeUInt16BE(longUdp.readUInt16BE(38) + 40, 38);
  t.deepEqual(send(0, longUdp), []);
  const fragment = udpTo(query('web'));
  fragment.writeUInt16BE(0x2000, 20);
  t.deepEqual(send(0, fragment), []);
  t.is(drops(0, DropReason.dnsMalformed), bad.length + 2);
  t.is(counters().malformed, bad.length + 2);
  t.is(counters().queriesAnswered, 0);

  const update = query('web');
  update[2] = 0x28; // opcode UPDATE
  const out = send(0, udpTo(update));
  const r = udpAnswer(t, out);
  t.is(r.rcode, DnsRcode.NOTIMP);
  t.is(r.question, null);
  t.is(frameOf(out[0]).length - 42, 12, 'twelve bytes, less than the query');
});

test('DNS to another address, or another port of the resolver, is not the stage\'s', (t) => {
  const { send, counters } = setup();
  send(1, buildArpRequest({ srcMac: C1.mac, srcIp: C1.ip, targetIp: C0.ip }));
  const toC1 = buildUdp4({ srcMac: C0.mac, dstMac: C1.mac, srcIp: C0.ip, dstIp: C1.ip, srcPort: 40000, dstPort: 53, payload: query('web') });
  const out = send(0, toC1);
  t.deepEqual(out.map((s) => s.fd), [101], 'switched to the container it was sent to');
  t.deepEqual(frameOf(out[0]), toC1, 'untouched');
  const otherPort = buildUdp4({ srcMac: C0.mac, dstMac: RESOLVER.mac, srcIp: C0.ip, dstIp: RESOLVER.ip, srcPort: 40000, dstPort: 5353, payload: query('web') });
  send(0, otherPort);
  t.is(counters().queriesAnswered + counters().malformed, 0);
});

test('on a nat network the gateway keeps answering ARP and ping for its address, the stage its DNS', (t) => {
  const { send } = setup({ nat: true });
  const arp = send(0, buildArpRequest({ srcMac: C0.mac, srcIp: C0.ip, targetIp: RESOLVER.ip }));
  t.is(arp.length, 1, 'the NAT gateway answers ARP for the resolver address');
  t.is(formatMac(frameOf(arp[0]), 22), RESOLVER.mac);
  const ping = send(0, buildIcmp4Echo({ srcMac: C0.mac, dstMac: RESOLVER.mac, srcIp: C0.ip, dstIp: RESOLVER.ip }));
  t.is(ping.length, 1);
  t.is(frameOf(ping[0])[34], 0, 'echo reply');
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query('web.mynet'))))), ['A 10.88.0.10']);
});

test('a resolver that owns its address (internal, overlay) answers ARP for it, and drops what else is sent to its MAC', (t) => {
  const { send, drops, counters } = setup({ ownsAddress: true });
  const arp = send(0, buildArpRequest({ srcMac: C0.mac, srcIp: C0.ip, targetIp: RESOLVER.ip }));
  t.deepEqual(arp.map((s) => s.fd), [100], 'answered back to the asker');
  t.is(formatMac(frameOf(arp[0]), 22), RESOLVER.mac);
  t.deepEqual(send(0, buildIcmp4Echo({ srcMac: C0.mac, dstMac: RESOLVER.mac, srcIp: C0.ip, dstIp: '8.8.8.8' })), [], 'nothing routes behind the resolver');
  t.is(drops(0, DropReason.noEgress), 1);
  t.deepEqual(records(udpAnswer(t, send(0, udpTo(query('web'))))), ['A 10.88.0.10']);
  t.is(counters().arpAnswered, 1);
  const { send: sendNat } = setup();
  t.deepEqual(sendNat(0, buildArpRequest({ srcMac: C0.mac, srcIp: C0.ip, targetIp: RESOLVER.ip })).map((s) => s.fd), [101], 'without it, ARP for the address is not the stage\'s (here it floods)');
});

const SYN_OPTIONS = Uint8Array.from([2, 4, 0x05, 0xb4, 1, 3, 3, 7]); // MSS 1460, NOP, window scale 7

test('TCP without state: SYN, SYN-ACK with a cookie, the query, one segment with the answer, ACK and FIN, then the close', (t) => {
  const { send, drops, counters } = setup();
  const synAck = tcpOut(t, send(0, tcpTo(TcpFlags.SYN, 1000, 0, undefined, { options: SYN_OPTIONS })));
  t.is(synAck.flags, TcpFlags.SYN | TcpFlags.ACK);
  t.is(synAck.ack, 1001);
  t.is(synAck.window, 0xffff);
  t.deepEqual([...synAck.options], [2, 4, 0x04, 0xc4], 'MSS 1220 and no other option');
  t.is(synAck.seq & 3, 3, "the cookie's low bits: the client's MSS class (1460)");
  const isn = synAck.seq;

  const msg = frameDnsTcp(query('web', DnsType.A, { id: 9 }));
  const answer = tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 1001, isn + 1, msg)));
  t.is(answer.flags, TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN);
  t.is(answer.seq, (isn + 1) >>> 0);
  t.is(answer.ack, 1001 + msg.length);
  const n = answer.payload.readUInt16BE(0);
  t.is(answer.payload.length, 2 + n, 'one whole message after its length');
  const r = parseDnsResponse(answer.payload, 2, n)!;
  t.is(r.id, 9);
  t.deepEqual(records(r), ['A 10.88.0.10']);

  const afterFin = (isn + 1 + 2 + n + 1) >>> 0;
  t.deepEqual(send(0, tcpTo(TcpFlags.ACK, 1001 + msg.length, afterFin)), [], "the client's acknowledgement needs no answer");
  t.is(drops(0, DropReason.dnsTcpNoAnswer), 1);
  const finAck = tcpOut(t, send(0, tcpTo(TcpFlags.FIN | TcpFlags.ACK, 1001 + msg.length, afterFin)));
  t.is(finAck.flags, TcpFlags.ACK);
  t.is(finAck.seq, afterFin);
  t.is(finAck.ack, 1001 + msg.length + 1);
  t.is(finAck.payload.length, 0);
  const c = counters();
  t.is(c.tcpSynAcks, 1);
  t.is(c.tcpAnswered, 1);
  t.is(c.queriesAnswered, 1);
  t.is(c.tcpResets, 0);
});

test('TCP: what fits no exchange gets a reset; a reset gets nothing', (t) => {
  const { send, counters } = setup();
  const isn = tcpOut(t, send(0, tcpTo(TcpFlags.SYN, 5000, 0))).seq;
  const msg = frameDnsTcp(query('web'));

  const forged = tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 5001, isn + 0x100000, msg)));
  t.is(forged.flags, TcpFlags.RST, 'an acknowledgement of no cookie');
  t.is(forged.seq, (isn + 0x100000) >>> 0);
  const otherTuple = tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 5001, isn + 1, msg, { sport: 41001 })), 41001);
  t.is(otherTuple.flags, TcpFlags.RST, "another 4-tuple's cookie");

  const noAck = tcpOut(t, send(0, tcpTo(TcpFlags.PSH, 5001, 0, msg)));
  t.is(noAck.flags, TcpFlags.RST | TcpFlags.ACK);
  t.is(noAck.seq, 0);
  t.is(noAck.ack, 5001 + msg.length);

  const split = tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 5001, isn + 1, msg.subarray(0, 10))));
  t.is(split.flags, TcpFlags.RST, 'a query split over segments');
  const two = new Uint8Array(2 * msg.length);
  two.set(msg);
  two.set(msg, msg.length);
  t.is(tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 5001, isn + 1, two))).flags, TcpFlags.RST, 'two pipelined queries');
  const loop = frameDnsTcp(Uint8Array.from(Buffer.from('123401000001000000000000016' + '1c00c00010001', 'hex')));
  t.is(tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 5001, isn + 1, loop))).flags, TcpFlags.RST, 'a malformed query');
  t.is(tcpOut(t, send(0, tcpTo(TcpFlags.SYN | TcpFlags.ACK, 5000, 1))).flags, TcpFlags.RST, 'a SYN-ACK to the resolver');

  t.deepEqual(send(0, tcpTo(TcpFlags.RST, 5001, 0)), [], 'never a reset for a reset');
  const c = counters();
  t.is(c.tcpResets, 7);
  t.is(c.malformed, 1);
  t.is(c.queriesAnswered, 0);
});

test('TCP: an answer fits one segment of the client\'s MSS class; names not local are handed over and answered with the right numbers', (t) => {
  const { send, handed } = setup();
  // No MSS option: the 536 class, so 40 addresses do not fit.
  const isn = tcpOut(t, send(0, tcpTo(TcpFlags.SYN, 7000, 0))).seq;
  t.is(isn & 3, 0);
  const msg = frameDnsTcp(query('many'));
  const big = tcpOut(t, send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH, 7001, isn + 1, msg)));
  t.true(big.payload.length <= 536);
  const r = parseDnsResponse(big.payload, 2, big.payload.readUInt16BE(0))!;
  t.true(r.truncated);
  t.is(r.answers.length, Math.floor((536 - 2 - 22) / 16), 'one 536-byte segment, less the length prefix');

  const ext = frameDnsTcp(query('example.com', DnsType.A, { id: 5 }));
  t.deepEqual(send(0, tcpTo(TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN, 7001, isn + 1, ext)), []);
  t.is(handed.length, 1);
  const q = dnsQueryOfFrame(handed[0].frame)!;
  t.is(q.transport, 'tcp');
  const reply = dnsAnswerFrame(handed[0].frame, upstreamAnswer(q.message, 99, ['192.0.2.1']), RESOLVER.mac)!;
  const seg = tcpOut(t, [{ fd: 100, wire: Buffer.concat([Buffer.alloc(10), Buffer.from(reply)]) }]);
  t.is(seg.flags, TcpFlags.ACK | TcpFlags.PSH | TcpFlags.FIN);
  t.is(seg.seq, (isn + 1) >>> 0);
  t.is(seg.ack, 7001 + ext.length + 1, 'the query and its FIN acknowledged');
  const answer = parseDnsResponse(seg.payload, 2, seg.payload.readUInt16BE(0))!;
  t.is(answer.id, 5);
  t.deepEqual(records(answer), ['A 192.0.2.1']);
});

test('a trace runs the stage dry: it says what would be answered, and nothing is sent, counted or handed over', (t) => {
  const { sw, handed, counters } = setup();
  const tr = sw.trace(0, DIR_OUT, udpTo(query('web')));
  t.is(tr.verdict, 'allow');
  t.is(tr.egressPort, 0, 'back to the asking port');
  t.regex(tr.steps.find((s) => s.action === 'dns')?.detail ?? '', /answered in place/);
  const fwd = sw.trace(0, DIR_OUT, udpTo(query('example.com')));
  t.is(fwd.verdict, 'block');
  t.is(fwd.reason, DropReason.dnsHandedOver);
  const syn = sw.trace(0, DIR_OUT, tcpTo(TcpFlags.SYN, 1, 0));
  t.is(syn.egressPort, 0);
  t.is(handed.length, 0);
  const c = counters();
  t.is(c.queriesAnswered + c.forwarded + c.tcpSynAcks, 0);
});

test('fuzz through the switch: mutated queries never throw, are answered within their allowance or dropped, and a bad one never gets more bytes than it sent', (t) => {
  const { send, counters } = setup();
  const rnd = mulberry32(0x53);
  const seeds = [query('web'), query('web.mynet', DnsType.AAAA, { edns: 1232 }), query('10.0.88.10.in-addr.arpa', DnsType.PTR), query('many', DnsType.A, { edns: 700 })];
  const p = new DnsQueryParser();
  let answered = 0;
  let dropped = 0;
  for (let i = 0; i < 3000; i++) {
    let msg = Uint8Array.from(seeds[i % seeds.length]);
    for (let e = 0; e < 1 + Math.floor(rnd() * 3); e++) {
      const at = Math.floor(rnd() * msg.length);
      const r = rnd();
      if (r < 0.5) msg[at] = rnd() * 256;
      else if (r < 0.7) msg[at] = 0xc0 | (rnd() * 4);
      else if (r < 0.85) msg = msg.slice(0, at);
      else msg = Uint8Array.from([...msg, ...Array.from({ length: 6 }, () => rnd() * 256)]);
    }
    const verdict = p.parse(msg, 0, msg.length);
    const out = send(0, udpTo(msg, 40000 + (i % 1000)));
    t.true(out.length <= 1);
    if (out.length === 0) {
      dropped++;
      continue;
    }
    answered++;
    const f = frameOf(out[0]);
    const dnsLen = f.length - 42;
    t.is(internetChecksum(f, 14, 20), 0);
    if (verdict === DnsVerdict.OK) t.true(dnsLen <= p.udpLimit(), `within the allowance (${dnsLen})`);
    else t.true(verdict === DnsVerdict.NOT_IMPLEMENTED && dnsLen <= msg.length, `verdict ${verdict} answered with ${dnsLen} bytes for ${msg.length}`);
  }
  t.true(answered > 100 && dropped > 100, `${answered} answered, ${dropped} dropped or handed over`);
  const c = counters();
  t.is(c.queriesAnswered, answered);
});
