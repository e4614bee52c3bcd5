import test from 'ava';
import { buildArpRequest, buildIcmp4Echo, buildIpv4, buildTcp4, buildUdp4, filler } from '../../src/packet/builders.js';
import { internetChecksum, pseudoSumV4 } from '../../src/packet/checksum.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { emitVnet, VNET_HDR_LEN, VnetFlags } from '../../src/packet/vnet.js';
import { COUNTER_COLUMNS, DROP_BASE } from '../../src/switch/counters.js';
import { MacTable } from '../../src/switch/mac-table.js';
import { Switch } from '../../src/switch/switch.js';
import { HEADROOM, RecordingIo, type Sent } from './helpers/recording-io.js';

const START_MS = 1e7;
const GW_MAC = '02:76:ac:12:00:01';
const EXT_MAC = '02:76:64:7f:00:02';
const HOST_MAC = '02:76:64:7f:00:01';
const EXT_IP = '100.127.0.2';
const REMOTE = '198.18.0.2';
const EXTERNAL_PORT = 9;
const macOf = (p: number) => `02:76:ac:12:00:${(p + 2).toString(16).padStart(2, '0')}`;
const ipOf = (p: number) => `172.18.0.${p + 2}`;

/** A nat network 172.18.0.0/24 with two containers (ports 0, 1, fds 100, 101) and its host TAP (port 9, fd 109). */
function setup(opts: { portFirst?: number; portLast?: number; published?: boolean } = {}) {
  const io = new RecordingIo();
  const counters = new Float64Array(16 * COUNTER_COLUMNS);
  let now = START_MS;
  const sw = new Switch(io, counters, new MacTable({ maxEntries: 64, agingSeconds: 300 }), { portStopped: () => {} }, () => now, {
    vfp: { maxFlows: 1024, maxTranspositions: 64, conntrack: { capacity: 4096 } },
  });
  sw.addNetwork(1, 'mynat', { nat: {
    subnet: '172.18.0.0/24',
    gatewayIp: '172.18.0.1',
    gatewayMac: GW_MAC,
    externalIp: EXT_IP,
    externalMac: EXT_MAC,
    hostMac: HOST_MAC,
    portFirst: opts.portFirst ?? 1024,
    portLast: opts.portLast ?? 65535,
  } });
  for (const p of [0, 1]) sw.addPort({ portId: p, networkId: 1, fd: 100 + p, name: `c${p}`, ip: ipOf(p), mac: macOf(p) });
  sw.addPort({ portId: EXTERNAL_PORT, networkId: 1, fd: 100 + EXTERNAL_PORT, name: 'host', external: true });
  if (opts.published) sw.setPublished(1, [{ protocol: 'tcp', externalPort: 8080, ip: ipOf(1), port: 80 }]);
  return {
    io,
    sw,
    tick: (ms: number) => (now += ms),
    send(port: number, ...frames: Uint8Array[]): Sent[] {
      frames.forEach((f, i) => io.place(i, f));
      sw.receive(port, frames.length);
      return io.take();
    },
    drop: (port: number, reason: number) => counters[port * COUNTER_COLUMNS + DROP_BASE + reason],
  };
}

const frameOf = (s: Sent) => s.wire.subarray(VNET_HDR_LEN);
const ip32 = mustParseIpv4Addr;
const macText = (b: Buffer, at: number) => [...b.subarray(at, at + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

/** IPv4 header and a complete L4 checksum both verify. */
function checksumsVerify(f: Buffer): boolean {
  const l4Len = f.readUInt16BE(16) - 20;
  const pseudo = f[23] === 1 ? 0 : pseudoSumV4(f.readUInt32BE(26), f.readUInt32BE(30), f[23], l4Len);
  return internetChecksum(f, 14, 20) === 0 && internetChecksum(f, 34, l4Len, pseudo) === 0;
}

const out = (p: number, dst: string, sport: number, dport: number, flags: number = TcpFlags.SYN, payload = filler(32)) =>
  buildTcp4({ srcMac: macOf(p), dstMac: GW_MAC, srcIp: ipOf(p), dstIp: dst, srcPort: sport, dstPort: dport, flags, payload });
const inbound = (src: string, sport: number, dport: number, flags: number, payload = filler(32)) =>
  buildTcp4({ srcMac: HOST_MAC, dstMac: EXT_MAC, srcIp: src, dstIp: EXT_IP, srcPort: sport, dstPort: dport, flags, payload });

test('the gateway answers ARP and ping for its address, in place, on the asking port', (t) => {
  const env = setup();
  const [arp] = env.send(0, buildArpRequest({ srcMac: macOf(0), srcIp: ipOf(0), targetIp: '172.18.0.1' }));
  const a = frameOf(arp);
  t.is(arp.fd, 100);
  t.is(macText(a, 0), macOf(0));
  t.is(macText(a, 6), GW_MAC);
  t.is(a.readUInt16BE(20), 2, 'ARP reply');
  t.is(macText(a, 22), GW_MAC, 'sender hardware address');
  t.is(a.readUInt32BE(28), ip32('172.18.0.1'));
  t.is(macText(a, 32), macOf(0));
  t.is(a.readUInt32BE(38), ip32(ipOf(0)));

  const [echo] = env.send(0, buildIcmp4Echo({ srcMac: macOf(0), dstMac: GW_MAC, srcIp: ipOf(0), dstIp: '172.18.0.1', ident: 7, seq: 3 }));
  const e = frameOf(echo);
  t.is(echo.fd, 100);
  t.is(e[34], 0, 'echo reply');
  t.is(e.readUInt32BE(26), ip32('172.18.0.1'));
  t.is(e.readUInt32BE(30), ip32(ipOf(0)));
  t.true(checksumsVerify(e));

  const [hostArp] = env.send(EXTERNAL_PORT, buildArpRequest({ srcMac: HOST_MAC, srcIp: '100.127.0.1', targetIp: EXT_IP }));
  t.is(hostArp.fd, 109, 'the external address answers ARP on the host TAP');
  t.is(macText(frameOf(hostArp), 22), EXT_MAC);
  t.deepEqual(env.send(0, buildArpRequest({ srcMac: macOf(0), srcIp: ipOf(0), targetIp: '172.18.0.77' })).map((s) => s.fd), [101], 'other ARP floods');
});

test('outbound TCP is translated to the external address, its reply back, both from the flow table after the first frame', (t) => {
  const env = setup();
  const [syn] = env.send(0, out(0, REMOTE, 40000, 80));
  const s = frameOf(syn);
  t.is(syn.fd, 109);
  t.is(macText(s, 0), HOST_MAC);
  t.is(macText(s, 6), EXT_MAC);
  t.is(s.readUInt32BE(26), ip32(EXT_IP));
  t.is(s.readUInt32BE(30), ip32(REMOTE));
  const natPort = s.readUInt16BE(34);
  t.true(natPort >= 1024);
  t.true(checksumsVerify(s));

  const [synAck] = env.send(EXTERNAL_PORT, inbound(REMOTE, 80, natPort, TcpFlags.SYN | TcpFlags.ACK));
  const r = frameOf(synAck);
  t.is(synAck.fd, 100);
  t.is(macText(r, 0), macOf(0));
  t.is(macText(r, 6), GW_MAC);
  t.is(r.readUInt32BE(30), ip32(ipOf(0)));
  t.is(r.readUInt16BE(36), 40000);
  t.is(r.readUInt32BE(26), ip32(REMOTE), 'the remote address is not translated');
  t.true(checksumsVerify(r));

  const runs = env.sw.vfp.stats.slowPathRuns;
  for (let i = 0; i < 3; i++) {
    const [o] = env.send(0, out(0, REMOTE, 40000, 80, TcpFlags.ACK, filler(100, i)));
    t.is(frameOf(o).readUInt16BE(34), natPort, 'the same mapping');
    t.true(checksumsVerify(frameOf(o)));
    const [b] = env.send(EXTERNAL_PORT, inbound(REMOTE, 80, natPort, TcpFlags.ACK, filler(50, i)));
    t.true(checksumsVerify(frameOf(b)));
  }
  t.is(env.sw.vfp.stats.slowPathRuns, runs, 'later frames never left the flow table');
  const [state] = env.sw.natState(START_MS);
  t.is(state.translations.length, 1);
  t.like(state.translations[0], { protocol: 'tcp', inside: `${ipOf(0)}:40000`, external: `${EXT_IP}:${natPort}`, remote: `${REMOTE}:80`, state: 'ESTABLISHED' });
});

test('a frame with a partial checksum (NEEDS_CSUM) keeps a correct pseudo-header sum through the NAT', (t) => {
  const env = setup();
  env.send(0, out(0, REMOTE, 40000, 80));
  for (let i = 0; i < 2; i++) {
    const frame = out(0, REMOTE, 40000, 80, TcpFlags.ACK, filler(300, i));
    const l4Len = frame.length - 34;
    frame.writeUInt16BE(pseudoSumV4(frame.readUInt32BE(26), frame.readUInt32BE(30), 6, l4Len), 34 + 16);
    env.io.place(0, frame);
    emitVnet({ flags: VnetFlags.NEEDS_CSUM, gsoType: 0, hdrLen: 0, gsoSize: 0, csumStart: 34, csumOffset: 16 }, env.io.buffer, HEADROOM - VNET_HDR_LEN);
    env.sw.receive(0, 1);
    const f = frameOf(env.io.take()[0]);
    t.is(f.readUInt32BE(26), ip32(EXT_IP));
    t.is(internetChecksum(f, 14, 20), 0);
    t.is(f.readUInt16BE(50), pseudoSumV4(ip32(EXT_IP), ip32(REMOTE), 6, l4Len), `frame ${i}: the pseudo-header sum of the translated addresses`);
  }
});

test('UDP and ICMP echo get their own mappings; only the remote they went to may answer', (t) => {
  const env = setup();
  const [u] = env.send(0, buildUdp4({ srcMac: macOf(0), dstMac: GW_MAC, srcIp: ipOf(0), dstIp: REMOTE, srcPort: 5353, dstPort: 53, payload: filler(20) }));
  const uf = frameOf(u);
  t.is(uf.readUInt32BE(26), ip32(EXT_IP));
  t.true(checksumsVerify(uf));
  const udpPort = uf.readUInt16BE(34);
  const reply = (from: string, sport: number) => buildUdp4({ srcMac: HOST_MAC, dstMac: EXT_MAC, srcIp: from, dstIp: EXT_IP, srcPort: sport, dstPort: udpPort, payload: filler(8) });
  const [back] = env.send(EXTERNAL_PORT, reply(REMOTE, 53));
  t.is(back.fd, 100);
  t.is(frameOf(back).readUInt16BE(36), 5353);
  t.true(checksumsVerify(frameOf(back)));
  t.deepEqual(env.send(EXTERNAL_PORT, reply('198.18.0.99', 53)), [], 'another remote address is filtered');
  t.deepEqual(env.send(EXTERNAL_PORT, reply(REMOTE, 54)), [], 'another remote port is filtered');
  t.is(env.drop(EXTERNAL_PORT, DropReason.natNoMapping), 2);

  const [ping] = env.send(0, buildIcmp4Echo({ srcMac: macOf(0), dstMac: GW_MAC, srcIp: ipOf(0), dstIp: REMOTE, ident: 4242, seq: 1 }));
  const p = frameOf(ping);
  const id = p.readUInt16BE(38);
  t.is(p.readUInt32BE(26), ip32(EXT_IP));
  t.true(checksumsVerify(p), 'ICMP checksum follows the identifier');
  const [pong] = env.send(EXTERNAL_PORT, buildIcmp4Echo({ srcMac: HOST_MAC, dstMac: EXT_MAC, srcIp: REMOTE, dstIp: EXT_IP, ident: id, seq: 1, reply: true }));
  const q = frameOf(pong);
  t.is(pong.fd, 100);
  t.is(q.readUInt16BE(38), 4242);
  t.true(checksumsVerify(q));
});

/** An ICMP error from the host about `quoted` (an IPv4 packet as it left the NAT), quoting its header and 8 bytes. */
function icmpErrorFromHost(quoted: Buffer, type = 3, code = 3): Buffer {
  const q = quoted.subarray(14, 14 + 28);
  const payload = Buffer.alloc(8 + q.length);
  payload[0] = type;
  payload[1] = code;
  q.copy(payload, 8);
  payload.writeUInt16BE(internetChecksum(payload, 0, payload.length), 2);
  return buildIpv4({ srcMac: HOST_MAC, dstMac: EXT_MAC, srcIp: '100.127.0.1', dstIp: EXT_IP, protocol: 1, payload });
}

test('an ICMP error from outside reaches the container with its embedded header translated back', (t) => {
  const env = setup();
  const [u] = env.send(0, buildUdp4({ srcMac: macOf(0), dstMac: GW_MAC, srcIp: ipOf(0), dstIp: REMOTE, srcPort: 5353, dstPort: 9999, payload: filler(20) }));
  const left = frameOf(u);
  const [err] = env.send(EXTERNAL_PORT, icmpErrorFromHost(Buffer.from(left)));
  t.is(err.fd, 100);
  const e = frameOf(err);
  t.is(e.readUInt32BE(30), ip32(ipOf(0)), 'outer destination');
  t.is(internetChecksum(e, 14, 20), 0, 'outer IPv4 checksum');
  t.is(internetChecksum(e, 34, e.readUInt16BE(16) - 20), 0, 'ICMP checksum over the quoted bytes');
  const q = 42; // the quoted IPv4 header
  t.is(e.readUInt32BE(q + 12), ip32(ipOf(0)), 'quoted source is the container again');
  t.is(e.readUInt32BE(q + 16), ip32(REMOTE));
  t.is(internetChecksum(e, q, 20), 0, 'quoted IPv4 checksum');
  t.is(e.readUInt16BE(q + 20), 5353, 'quoted source port');
  t.is(e.readUInt16BE(q + 22), 9999);
  const quotedUdpLen = e.readUInt16BE(q + 24);
  const original = buildUdp4({ srcIp: ipOf(0), dstIp: REMOTE, srcPort: 5353, dstPort: 9999, payload: filler(20) });
  t.is(e.readUInt16BE(q + 26), original.readUInt16BE(40), 'quoted UDP checksum is the one the container sent');
  t.is(quotedUdpLen, 28);

  const stray = Buffer.from(left);
  stray.writeUInt16BE(stray.readUInt16BE(34) + 1, 34);
  t.deepEqual(env.send(EXTERNAL_PORT, icmpErrorFromHost(stray)), [], 'an error about a port with no mapping is dropped');
});

test('a published port reaches its container, which answers from the published port; hairpin works both ways', (t) => {
  const env = setup({ published: true });
  const [inb] = env.send(EXTERNAL_PORT, inbound(REMOTE, 50000, 8080, TcpFlags.SYN));
  t.is(inb.fd, 101);
  const i = frameOf(inb);
  t.is(i.readUInt32BE(30), ip32(ipOf(1)));
  t.is(i.readUInt16BE(36), 80);
  t.true(checksumsVerify(i));
  const [ans] = env.send(1, out(1, REMOTE, 80, 50000, TcpFlags.SYN | TcpFlags.ACK));
  const a = frameOf(ans);
  t.is(ans.fd, 109);
  t.is(a.readUInt32BE(26), ip32(EXT_IP));
  t.is(a.readUInt16BE(34), 8080, 'the reply leaves from the published port');
  t.true(checksumsVerify(a));

  const [hp] = env.send(0, out(0, EXT_IP, 41000, 8080));
  t.is(hp.fd, 101, 'container 0 reaches container 1 through the external address');
  const h = frameOf(hp);
  t.is(h.readUInt32BE(26), ip32(EXT_IP), 'source translated, so the answer comes back through the gateway');
  t.is(h.readUInt32BE(30), ip32(ipOf(1)));
  t.is(macText(h, 6), GW_MAC);
  const mapped = h.readUInt16BE(34);
  const [hpBack] = env.send(1, out(1, EXT_IP, 80, mapped, TcpFlags.SYN | TcpFlags.ACK));
  t.is(hpBack.fd, 100);
  const b = frameOf(hpBack);
  t.is(b.readUInt32BE(26), ip32(EXT_IP));
  t.is(b.readUInt16BE(34), 8080);
  t.is(b.readUInt32BE(30), ip32(ipOf(0)));
  t.is(b.readUInt16BE(36), 41000);
  t.true(checksumsVerify(b));

  t.deepEqual(env.send(EXTERNAL_PORT, inbound(REMOTE, 50000, 8081, TcpFlags.SYN)), [], 'an unpublished port is dropped');
  t.is(env.drop(EXTERNAL_PORT, DropReason.natNoMapping), 1);
});

test('containers on the same nat network are switched, not translated', (t) => {
  const env = setup();
  env.send(1, buildArpRequest({ srcMac: macOf(1), srcIp: ipOf(1), targetIp: ipOf(0) }));
  const frame = buildTcp4({ srcMac: macOf(0), dstMac: macOf(1), srcIp: ipOf(0), dstIp: ipOf(1), srcPort: 1000, dstPort: 80 });
  const [sent] = env.send(0, frame);
  t.is(sent.fd, 101);
  t.deepEqual(frameOf(sent), frame);
  t.is(env.sw.natState(START_MS)[0].translations.length, 0);
});

test('an exhausted pool drops new flows and counts them; existing ones go on, and a port comes back when its connection ends', (t) => {
  const env = setup({ portFirst: 40000, portLast: 40001 });
  const ports = [1, 2].map((k) => frameOf(env.send(0, out(0, REMOTE, 1000 + k, 80))[0]).readUInt16BE(34));
  t.deepEqual(ports.sort(), [40000, 40001]);
  t.deepEqual(env.send(0, out(0, REMOTE, 1003, 80)), [], 'a third flow finds no port');
  t.is(env.drop(0, DropReason.natPoolExhausted), 1);
  t.is(env.sw.natState(START_MS)[0].counters.refused, 1);
  t.is(env.send(0, out(0, REMOTE, 1001, 80, TcpFlags.ACK)).length, 1, 'an existing flow still passes');

  env.send(0, out(0, REMOTE, 1001, 80, TcpFlags.RST));
  env.tick(6000); // past the closed-connection timeout
  const [fresh] = env.send(0, out(0, REMOTE, 1003, 80));
  t.truthy(fresh, 'the port of the reset connection is reused');
  t.is(env.sw.natState(env.tick(0))[0].counters.expired, 1);
});

test('traffic the gateway cannot translate is dropped and counted, never crashes it', (t) => {
  const env = setup();
  t.deepEqual(env.send(0, buildIpv4({ srcMac: macOf(0), dstMac: GW_MAC, srcIp: ipOf(0), dstIp: REMOTE, protocol: 47, payload: filler(24) })), [], 'GRE');
  t.deepEqual(env.send(EXTERNAL_PORT, buildUdp4({ srcMac: HOST_MAC, dstMac: EXT_MAC, srcIp: REMOTE, dstIp: '100.127.0.9', payload: filler(8) })), [], 'not our address');
  const truncated = icmpErrorFromHost(Buffer.from(frameOf(env.send(0, out(0, REMOTE, 2000, 80))[0]))).subarray(0, 14 + 20 + 8 + 10);
  truncated.writeUInt16BE(truncated.length - 14, 16);
  truncated.writeUInt16BE(0, 24);
  truncated.writeUInt16BE(internetChecksum(truncated, 14, 20), 24);
  t.deepEqual(env.send(EXTERNAL_PORT, truncated), [], 'an ICMP error quoting too little');
  t.is(env.drop(0, DropReason.natNoMapping), 1);
  t.is(env.drop(EXTERNAL_PORT, DropReason.natNoMapping), 2);
  t.is(env.send(0, out(0, REMOTE, 2000, 80, TcpFlags.ACK)).length, 1, 'and it still forwards');
});
