import test, { type ExecutionContext } from 'ava';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { mustParseIpv6Addr } from '../../src/packet/ipv6.js';
import { classifyFrame, FRAME_OK } from '../../src/packet/validate.js';
import { extractKey, KEY_WORDS, KeyWord, Meta, META_WORDS } from '../../src/vfp/key.js';
import { PolicyError } from '../../src/vfp/policy.js';
import { buildTraceFrame, formatTracePacket, parseTracePacket, type TracePacket } from '../../src/vfp/trace-packet.js';

const SRC_MAC = '02:76:0a:00:00:02';
const DST_MAC = '02:76:0a:00:00:03';

function refused(t: ExecutionContext, text: string, what: RegExp): void {
  const err = t.throws(() => parseTracePacket(text), { instanceOf: PolicyError });
  const msg = err?.message ?? '';
  t.regex(msg, what);
  t.false(msg.includes('\n'), msg);
  t.true(msg.endsWith('.') && !msg.endsWith('..'), `ends with one period: ${msg}`);
  t.false(/\.\s+\S/.test(msg), `one sentence: ${msg}`);
}

test('tcp with flags', (t) => {
  t.deepEqual(parseTracePacket('tcp 10.0.0.2:1234 > 10.0.0.3:80 syn'), {
    protocol: 'tcp',
    version: 4,
    src: '10.0.0.2',
    dst: '10.0.0.3',
    srcPort: 1234,
    dstPort: 80,
    tcpFlags: 0x02,
    icmpType: 128,
  });
  t.is(parseTracePacket('tcp 10.0.0.2:1234 > 10.0.0.3:80').tcpFlags, 0x02, 'no flags: a SYN');
  t.is(parseTracePacket('tcp 10.0.0.2:1234 > 10.0.0.3:80 syn,ack').tcpFlags, 0x12);
  t.is(parseTracePacket('  TCP   10.0.0.2:1  >  10.0.0.3:2   FIN, ACK ').tcpFlags, 0x11, 'case and spacing');
  t.is(parseTracePacket('tcp 10.0.0.2:1 > 10.0.0.3:2 rst').tcpFlags, 0x04);
  t.is(parseTracePacket('tcp 10.0.0.2:1 > 10.0.0.3:2 psh ack urg').tcpFlags, 0x38);
  const edge = parseTracePacket('tcp 10.0.0.2:0 > 10.0.0.3:65535 ack');
  t.is(edge.srcPort, 0);
  t.is(edge.dstPort, 65535);
});

test('udp, and IPv6 with brackets', (t) => {
  const u = parseTracePacket('udp 10.0.0.2:5000 > 10.0.0.3:53');
  t.like(u, { protocol: 'udp', version: 4, srcPort: 5000, dstPort: 53, tcpFlags: 0 });
  const v6 = parseTracePacket('tcp [fd00::2]:1234 > [fd00::3]:80 syn,ack');
  t.like(v6, { protocol: 'tcp', version: 6, src: 'fd00::2', dst: 'fd00::3', srcPort: 1234, dstPort: 80, tcpFlags: 0x12 });
  t.like(parseTracePacket('udp [FD00:0::0:2]:1 > [fe80::1]:2'), { src: 'fd00::2', dst: 'fe80::1' }, 'addresses come back normalized');
  t.like(parseTracePacket('udp [10.0.0.2]:1 > 10.0.0.3:2'), { version: 4, src: '10.0.0.2', srcPort: 1 });
});

test('icmp: echo-request (default), echo-reply, type N; icmpv6', (t) => {
  t.like(parseTracePacket('icmp 10.0.0.2 > 10.0.0.3'), { protocol: 'icmp', version: 4, icmpType: 8, srcPort: 0, dstPort: 0, tcpFlags: 0 });
  t.is(parseTracePacket('icmp 10.0.0.2 > 10.0.0.3 echo-request').icmpType, 8);
  t.is(parseTracePacket('icmp 10.0.0.2 > 10.0.0.3 echo-reply').icmpType, 0);
  t.is(parseTracePacket('icmp 10.0.0.2 > 10.0.0.3 type 3').icmpType, 3);
  t.is(parseTracePacket('icmp 10.0.0.2 > 10.0.0.3 type 255').icmpType, 255);
  t.is(parseTracePacket('icmpv6 fd00::2 > fd00::3').icmpType, 128);
  t.is(parseTracePacket('icmpv6 [fd00::2] > [fd00::3] echo-reply').icmpType, 129);
  t.is(parseTracePacket('icmpv6 fe80::1 > ff02::1 type 135').icmpType, 135);
});

test('refusals are one sentence that says what to write', (t) => {
  refused(t, 'tcp 10.0.0.2:1234 10.0.0.3:80', /is not a packet: write it as "tcp 10\.0\.0\.2:1234 > 10\.0\.0\.3:80 syn"/);
  refused(t, 'tcp', /is not a packet/);
  refused(t, '', /is not a packet/);
  refused(t, 'sctp 10.0.0.2:1 > 10.0.0.3:2', /^protocol "sctp" cannot be traced: use tcp, udp, icmp or icmpv6\.$/);
  refused(t, 'tcp 10.0.0.2 > 10.0.0.3:80', /the source "10\.0\.0\.2" has no port: write it as/);
  refused(t, 'udp 10.0.0.2:1 > 10.0.0.3', /the destination "10\.0\.0\.3" has no port/);
  refused(t, 'tcp fd00::2 > [fd00::3]:80', /has no port/);
  refused(t, 'icmp 10.0.0.2:5 > 10.0.0.3', /ICMP has no ports, but the source "10\.0\.0\.2:5" names one/);
  refused(t, 'tcp 10.0.0.2:70000 > 10.0.0.3:80', /the source port 70000 is out of range: ports go from 0 to 65535\.$/);
  refused(t, 'tcp 10.0.0.2:1 > 10.0.0.999:80', /the destination address "10\.0\.0\.999" is not an IP address/);
  refused(t, 'tcp web:1 > 10.0.0.3:80', /the source address "web" is not an IP address/);
  refused(t, 'tcp 10.0.0.2:1 > [fd00::3]:80', /mix IPv4 and IPv6: use one family/);
  refused(t, 'icmp fd00::2 > fd00::3', /^icmp is IPv4: use icmpv6 for IPv6 addresses\.$/);
  refused(t, 'icmpv6 10.0.0.2 > 10.0.0.3', /^icmpv6 is IPv6: use icmp for IPv4 addresses\.$/);
  refused(t, 'tcp 10.0.0.2:1 > 10.0.0.3:2 syn,bogus', /^TCP flag "bogus" is not known: use syn, ack, fin, rst, psh or urg, separated by commas\.$/);
  refused(t, 'udp 10.0.0.2:1 > 10.0.0.3:2 syn', /UDP has no flags, but "syn" follows the destination/);
  refused(t, 'icmp 10.0.0.2 > 10.0.0.3 type 300', /"type 300" is not an ICMP kind: use echo-request, echo-reply or type N\.$/);
  refused(t, 'icmp 10.0.0.2 > 10.0.0.3 ping', /"ping" is not an ICMP kind/);
});

// Regression: the range check is `n > 65535` only, so a negative port passes;
// the frame then carries 65535 (write16 of -1) while the trace reports -1.
test('a negative port is refused', (t) => {
  t.throws(() => parseTracePacket('tcp 10.0.0.2:-1 > 10.0.0.3:80'), { instanceOf: PolicyError });
});

/** Reads the frame back through the switch's own key extraction. */
function readBack(frame: Uint8Array) {
  const verdict = classifyFrame(frame, 0, frame.length, -1, 1518);
  if (verdict !== FRAME_OK) throw new Error(`classifyFrame refused the trace frame: drop reason ${verdict}`);
  const key = new Uint32Array(KEY_WORDS);
  const meta = new Int32Array(META_WORDS);
  extractKey(frame, 0, frame.length, key, meta);
  return { key, meta };
}

function addrWords(ip: string): number[] {
  if (ip.includes(':')) {
    const b = mustParseIpv6Addr(ip);
    return [0, 4, 8, 12].map((i) => ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0);
  }
  return [mustParseIpv4Addr(ip), 0, 0, 0];
}

function checkFrame(t: ExecutionContext, text: string, want: { proto: number; icmpType?: number; ident?: number }) {
  const p: TracePacket = parseTracePacket(text);
  const { key, meta } = readBack(buildTraceFrame(p, SRC_MAC, DST_MAC));
  t.is(key[KeyWord.SRC_MAC_HI], 0x0276, text);
  t.is(key[KeyWord.SRC_MAC_LO], 0x0a000002, text);
  t.is(key[KeyWord.DST_MAC_LO], 0x0a000003, text);
  t.is(key[KeyWord.ETH_VLAN] >>> 16, p.version === 4 ? 0x0800 : 0x86dd, text);
  t.is(meta[Meta.IP_VERSION], p.version, text);
  t.is(key[KeyWord.PROTO] >>> 24, want.proto, text);
  t.is((key[KeyWord.PROTO] >>> 16) & 0xff, want.icmpType ?? 0, text);
  t.is(key[KeyWord.PROTO] & 0xffff, want.ident ?? 0, text);
  t.is(key[KeyWord.PORTS] >>> 16, p.srcPort, text);
  t.is(key[KeyWord.PORTS] & 0xffff, p.dstPort, text);
  t.is(meta[Meta.TCP_FLAGS], p.tcpFlags, text);
  t.deepEqual(Array.from(key.subarray(KeyWord.SRC_IP, KeyWord.SRC_IP + 4)), addrWords(p.src), text);
  t.deepEqual(Array.from(key.subarray(KeyWord.DST_IP, KeyWord.DST_IP + 4)), addrWords(p.dst), text);
}

test('buildTraceFrame: extractKey reads back the parsed fields', (t) => {
  checkFrame(t, 'tcp 10.0.0.2:1234 > 10.0.0.3:80 syn', { proto: 6 });
  checkFrame(t, 'tcp 192.168.1.200:65535 > 172.16.0.1:1 fin,psh,ack', { proto: 6 });
  checkFrame(t, 'udp 10.0.0.2:5000 > 10.0.0.3:53', { proto: 17 });
  checkFrame(t, 'tcp [fd00::2]:1234 > [2001:db8::3]:443 syn,ack', { proto: 6 });
  checkFrame(t, 'udp [fe80::1]:546 > [ff02::1:2]:547', { proto: 17 });
  checkFrame(t, 'icmp 10.0.0.2 > 10.0.0.3', { proto: 1, icmpType: 8, ident: 1 });
  checkFrame(t, 'icmp 10.0.0.2 > 10.0.0.3 echo-reply', { proto: 1, icmpType: 0, ident: 1 });
  checkFrame(t, 'icmp 10.0.0.2 > 10.0.0.3 type 11', { proto: 1, icmpType: 11 });
  checkFrame(t, 'icmpv6 fd00::2 > fd00::3', { proto: 58, icmpType: 128, ident: 1 });
  checkFrame(t, 'icmpv6 fd00::2 > fd00::3 echo-reply', { proto: 58, icmpType: 129, ident: 1 });
  checkFrame(t, 'icmpv6 fe80::1 > ff02::1 type 135', { proto: 58, icmpType: 135 });
});

test('formatTracePacket round-trips through parseTracePacket', (t) => {
  for (const text of [
    'tcp 10.0.0.2:1234 > 10.0.0.3:80 syn',
    'tcp 10.0.0.2:1234 > 10.0.0.3:80 fin,ack',
    'tcp [fd00::2]:1 > [fd00::3]:2 syn,ack',
    'udp 10.0.0.2:5000 > 10.0.0.3:53',
    'icmp 10.0.0.2 > 10.0.0.3 echo-reply',
    'icmp 10.0.0.2 > 10.0.0.3 type 3',
    'icmpv6 fd00::2 > fd00::3',
  ]) {
    const p = parseTracePacket(text);
    t.deepEqual(parseTracePacket(formatTracePacket(p)), p, text);
  }
  t.is(formatTracePacket(parseTracePacket('udp 10.0.0.2:5000 > 10.0.0.3:53')), 'udp 10.0.0.2:5000 > 10.0.0.3:53');
  t.is(formatTracePacket(parseTracePacket('tcp [fd00::2]:1 > [fd00::3]:2 ack,syn')), 'tcp [fd00::2]:1 > [fd00::3]:2 syn,ack');
});
