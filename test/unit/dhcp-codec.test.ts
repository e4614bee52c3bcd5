/**
 * The DHCP codec: the client's frames byte for byte and in round trips, the
 * server replies it reads, and every way a reply can be malformed (each gives
 * null, none throws).
 */
import test from 'ava';
import { BROADCAST_MAC, buildUdp4 } from '../../src/packet/builders.js';
import { internetChecksum, pseudoSumV4 } from '../../src/packet/checksum.js';
import { Ipv4View } from '../../src/packet/ipv4.js';
import { UdpView } from '../../src/packet/udp.js';
import {
  BootpOp,
  DHCP_HEADER_LEN,
  DhcpField,
  DhcpMessageType,
  DhcpOption,
  emitDhcpMessage,
  formatDhcpMessage,
  ipv4Option,
  messageTypeOf,
  parseDhcpMessage,
  textOption,
  u16Option,
  u32Option,
  type DhcpMessage,
} from '../../src/dhcp/message.js';
import {
  PARAMETER_REQUEST_LIST,
  buildDecline,
  buildDiscover,
  buildRelease,
  buildRequest,
  parseDhcpFrame,
  parseServerReply,
  type DhcpReply,
} from '../../src/dhcp/frames.js';
import { INFINITE_LEASE_SECONDS, leaseDeadlines, leaseFromAck, prefixLengthOfMask, renewalTimes } from '../../src/dhcp/lease.js';
import { mulberry32 } from './helpers/random.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const zeros = (n: number) => '00'.repeat(n);

const MAC = '02:00:5e:10:00:01';
const MAC_BYTES = hex('02 00 5e 10 00 01');
const XID = 0x12345678;
const SERVER_MAC = '02:00:5e:10:00:fe';
const SERVER_IP = '192.168.50.1';

// ---- the client's frames ------------------------------------------------------------

// DHCPDISCOVER from 02:00:5e:10:00:01, xid 0x12345678, hostname "web", written out from RFC 2131's figure 1 and RFC 2132.
const DISCOVER_PAYLOAD = hex(
  [
    '01 01 06 00', // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
    '12 34 56 78', // xid
    '00 00 80 00', // secs 0, flags: broadcast
    zeros(16), // ciaddr, yiaddr, siaddr, giaddr
    '02 00 5e 10 00 01', // chaddr: the MAC, then 10 zero bytes
    zeros(10),
    zeros(64 + 128), // sname, file
    '63 82 53 63', // magic cookie
    '35 01 01', // 53 message type: DISCOVER
    '3d 07 01 02 00 5e 10 00 01', // 61 client identifier: type 1 (Ethernet), the MAC
    '0c 03 77 65 62', // 12 hostname "web"
    '37 08 01 03 06 0f 33 3a 3b 1a', // 55 parameter request list: mask, router, DNS, domain, lease, T1, T2, MTU
    'ff', // end
    zeros(300 - 268), // padded to BOOTP's 300 bytes
  ].join(''),
);

/** Splits a frame into its layers and checks both checksums independently of the codec. */
function layers(frame: Uint8Array) {
  const ip = new Ipv4View();
  if (!ip.reset(frame, 14, frame.length - 14)) throw new Error('no IPv4 header');
  const udp = new UdpView();
  if (!udp.reset(frame, ip.payloadOffset(), ip.payloadLength())) throw new Error('no UDP header');
  return {
    dstMac: toHex(frame.subarray(0, 6)),
    srcMac: toHex(frame.subarray(6, 12)),
    etherType: (frame[12] << 8) | frame[13],
    ip,
    udp,
    ipChecksumOk: internetChecksum(frame, 14, ip.headerLength()) === 0,
    udpChecksumOk: internetChecksum(frame, udp.off, udp.length(), pseudoSumV4(ip.src(), ip.dst(), 17, udp.length())) === 0,
    payload: frame.subarray(udp.payloadOffset(), udp.payloadOffset() + udp.payloadLength()),
  };
}

test('deconstruct: a DISCOVER is a broadcast frame from the MAC with both checksums right and the RFC layout', (t) => {
  const frame = buildDiscover({ mac: MAC, xid: XID, hostname: 'web' });
  const l = layers(frame);
  t.is(l.dstMac, 'ffffffffffff');
  t.is(l.srcMac, '02005e100001');
  t.is(l.etherType, 0x0800);
  t.is(l.ip.src(), 0);
  t.is(l.ip.dst(), 0xffffffff);
  t.is(l.ip.protocol(), 17);
  t.is(l.ip.ttl(), 64);
  t.true(l.ipChecksumOk, 'IPv4 header checksum');
  t.is(l.udp.srcPort(), 68);
  t.is(l.udp.dstPort(), 67);
  t.not(l.udp.checksum(), 0, 'a UDP checksum is sent');
  t.true(l.udpChecksumOk, 'UDP checksum over the pseudo-header');
  t.is(toHex(l.payload), toHex(DISCOVER_PAYLOAD));
  t.is(frame.length, 14 + 20 + 8 + 300);
});

test('the frames parse back: DISCOVER, the four REQUESTs, RELEASE and DECLINE carry what RFC 2131 table 5 says', (t) => {
  const opt = (m: DhcpMessage, code: number) => m.options.get(code);
  const clientId = hex('01 02 00 5e 10 00 01');

  const discover = parseDhcpFrame(buildDiscover({ mac: MAC, xid: XID, secs: 3, requestedAddress: '192.168.50.9' }))!;
  t.is(messageTypeOf(discover.message), DhcpMessageType.DISCOVER);
  t.is(discover.message.secs, 3);
  t.deepEqual(opt(discover.message, DhcpOption.REQUESTED_ADDRESS), hex('c0 a8 32 09'));
  t.is(opt(discover.message, DhcpOption.HOSTNAME), undefined, 'no hostname unless given');
  t.deepEqual(opt(discover.message, DhcpOption.PARAMETER_REQUEST_LIST), PARAMETER_REQUEST_LIST);

  const selecting = parseDhcpFrame(buildRequest({ mac: MAC, xid: XID, hostname: 'web', kind: 'selecting', requestedAddress: '192.168.50.9', serverId: SERVER_IP }))!;
  t.like(selecting, { srcIp: '0.0.0.0', dstIp: '255.255.255.255', dstMac: BROADCAST_MAC, srcMac: MAC, srcPort: 68, dstPort: 67 });
  t.like(selecting.message, { op: BootpOp.REQUEST, xid: XID, broadcast: true, ciaddr: '0.0.0.0' });
  t.is(messageTypeOf(selecting.message), DhcpMessageType.REQUEST);
  t.deepEqual(opt(selecting.message, DhcpOption.REQUESTED_ADDRESS), hex('c0 a8 32 09'));
  t.deepEqual(opt(selecting.message, DhcpOption.SERVER_ID), hex('c0 a8 32 01'));
  t.deepEqual(opt(selecting.message, DhcpOption.CLIENT_ID), clientId);
  t.deepEqual(opt(selecting.message, DhcpOption.HOSTNAME), textOption('web'));
  t.deepEqual(selecting.message.chaddr, Uint8Array.from([...MAC_BYTES, ...new Uint8Array(10)]));

  const reboot = parseDhcpFrame(buildRequest({ mac: MAC, xid: XID, kind: 'init-reboot', requestedAddress: '192.168.50.9' }))!;
  t.like(reboot, { srcIp: '0.0.0.0', dstIp: '255.255.255.255' });
  t.like(reboot.message, { broadcast: true, ciaddr: '0.0.0.0' });
  t.truthy(opt(reboot.message, DhcpOption.REQUESTED_ADDRESS));
  t.is(opt(reboot.message, DhcpOption.SERVER_ID), undefined, 'INIT-REBOOT names no server');

  const renewing = parseDhcpFrame(
    buildRequest({ mac: MAC, xid: XID, hostname: 'web', kind: 'renewing', clientAddress: '192.168.50.9', serverId: SERVER_IP, serverMac: SERVER_MAC }),
  )!;
  t.like(renewing, { srcIp: '192.168.50.9', dstIp: SERVER_IP, dstMac: SERVER_MAC, srcMac: MAC });
  t.like(renewing.message, { broadcast: false, ciaddr: '192.168.50.9' });
  t.is(opt(renewing.message, DhcpOption.REQUESTED_ADDRESS), undefined, 'RENEWING MUST NOT carry option 50');
  t.is(opt(renewing.message, DhcpOption.SERVER_ID), undefined, 'nor option 54');
  t.deepEqual(opt(renewing.message, DhcpOption.HOSTNAME), textOption('web'));

  const rebinding = parseDhcpFrame(buildRequest({ mac: MAC, xid: XID, kind: 'rebinding', clientAddress: '192.168.50.9' }))!;
  t.like(rebinding, { srcIp: '192.168.50.9', dstIp: '255.255.255.255', dstMac: BROADCAST_MAC });
  t.like(rebinding.message, { broadcast: false, ciaddr: '192.168.50.9' });
  t.is(opt(rebinding.message, DhcpOption.REQUESTED_ADDRESS), undefined);
  t.is(opt(rebinding.message, DhcpOption.SERVER_ID), undefined);

  const release = parseDhcpFrame(buildRelease({ mac: MAC, xid: XID, clientAddress: '192.168.50.9', serverId: SERVER_IP, serverMac: SERVER_MAC }))!;
  t.like(release, { srcIp: '192.168.50.9', dstIp: SERVER_IP, dstMac: SERVER_MAC });
  t.like(release.message, { broadcast: false, ciaddr: '192.168.50.9' });
  t.is(messageTypeOf(release.message), DhcpMessageType.RELEASE);
  t.deepEqual(opt(release.message, DhcpOption.SERVER_ID), hex('c0 a8 32 01'));
  t.deepEqual(opt(release.message, DhcpOption.CLIENT_ID), clientId);
  t.is(opt(release.message, DhcpOption.PARAMETER_REQUEST_LIST), undefined);

  const decline = parseDhcpFrame(buildDecline({ mac: MAC, xid: XID, requestedAddress: '192.168.50.9', serverId: SERVER_IP, message: 'in use' }))!;
  t.like(decline, { srcIp: '0.0.0.0', dstIp: '255.255.255.255' });
  t.like(decline.message, { ciaddr: '0.0.0.0' });
  t.is(messageTypeOf(decline.message), DhcpMessageType.DECLINE);
  t.deepEqual(opt(decline.message, DhcpOption.REQUESTED_ADDRESS), hex('c0 a8 32 09'));
  t.deepEqual(opt(decline.message, DhcpOption.SERVER_ID), hex('c0 a8 32 01'));
  t.deepEqual(opt(decline.message, DhcpOption.MESSAGE), textOption('in use'));

  for (const frame of [discover, selecting, reboot, renewing, rebinding, release, decline]) {
    t.like(frame.message, { op: BootpOp.REQUEST, htype: 1, hlen: 6, xid: XID });
  }
  t.is(parseServerReply(buildDiscover({ mac: MAC, xid: XID }), { xid: XID, mac: MAC_BYTES }), null, 'a client message is not a reply');
});

test('builders refuse a bad MAC, address or hostname with RangeError', (t) => {
  t.throws(() => buildDiscover({ mac: '02:00:5e:10:00', xid: 1 }), { instanceOf: RangeError });
  t.throws(() => buildDiscover({ mac: MAC, xid: 1, hostname: '' }), { instanceOf: RangeError, message: /hostname/ });
  t.throws(() => buildDiscover({ mac: MAC, xid: 1, hostname: 'a b' }), { instanceOf: RangeError });
  t.throws(() => buildDiscover({ mac: MAC, xid: 1, hostname: 'x'.repeat(64) }), { instanceOf: RangeError });
  t.throws(() => buildRequest({ mac: MAC, xid: 1, kind: 'rebinding', clientAddress: '192.168.50' }), { instanceOf: RangeError });
});

// ---- the message codec ------------------------------------------------------------------

function message(overrides: Partial<DhcpMessage> = {}): DhcpMessage {
  const chaddr = new Uint8Array(16);
  chaddr.set(MAC_BYTES);
  return {
    op: BootpOp.REPLY,
    htype: 1,
    hlen: 6,
    hops: 1,
    xid: XID,
    secs: 7,
    broadcast: true,
    ciaddr: '0.0.0.0',
    yiaddr: '192.168.50.9',
    siaddr: '192.168.50.2',
    giaddr: '192.168.60.1',
    chaddr,
    serverName: 'boot-server',
    bootFile: 'pxelinux.0',
    options: new Map([
      [DhcpOption.MESSAGE_TYPE, Uint8Array.of(DhcpMessageType.OFFER)],
      [DhcpOption.SERVER_ID, ipv4Option(SERVER_IP)],
    ]),
    ...overrides,
  };
}

test('emit and parse a message: every header field and option survives', (t) => {
  const m = message();
  const bytes = emitDhcpMessage(m);
  t.is(bytes.length, 300);
  t.deepEqual(parseDhcpMessage(bytes, 0, bytes.length), m);
  // At an offset inside a larger buffer, with trailing bytes after END.
  const framed = new Uint8Array(bytes.length + 20);
  framed.set(bytes, 7);
  t.deepEqual(parseDhcpMessage(framed, 7, bytes.length + 5), m);
});

test('an option longer than 255 bytes goes out in pieces and is joined again (RFC 3396)', (t) => {
  const long = Uint8Array.from({ length: 600 }, (_, i) => (i * 7) & 0xff || 1);
  const m = message({ options: new Map([[DhcpOption.MESSAGE_TYPE, Uint8Array.of(2)], [224, long]]) });
  const bytes = emitDhcpMessage(m);
  // 3 pieces: 255 + 255 + 90.
  t.is(bytes[DhcpField.OPTIONS + 3], 224);
  t.is(bytes[DhcpField.OPTIONS + 4], 255);
  t.is(bytes[DhcpField.OPTIONS + 3 + 257], 224);
  t.is(bytes[DhcpField.OPTIONS + 3 + 514 + 1], 90);
  t.deepEqual(parseDhcpMessage(bytes, 0, bytes.length)?.options.get(224), long);
});

test('emit refuses what cannot be written', (t) => {
  t.throws(() => emitDhcpMessage(message({ chaddr: new Uint8Array(17) })), { instanceOf: RangeError });
  for (const code of [DhcpOption.PAD, DhcpOption.END, DhcpOption.OVERLOAD, 256]) {
    t.throws(() => emitDhcpMessage(message({ options: new Map([[code, Uint8Array.of(1)]]) })), { instanceOf: RangeError }, `code ${code}`);
  }
  t.throws(() => emitDhcpMessage(message({ serverName: 'x'.repeat(64) })), { instanceOf: RangeError });
  t.throws(() => emitDhcpMessage(message({ bootFile: 'x'.repeat(128) })), { instanceOf: RangeError });
  t.throws(() => emitDhcpMessage(message({ yiaddr: '1.2.3' })), { instanceOf: RangeError });
});

test('format', (t) => {
  t.is(formatDhcpMessage(message()), 'DHCP OFFER xid=0x12345678 chaddr=02:00:5e:10:00:01 yiaddr=192.168.50.9 giaddr=192.168.60.1 broadcast');
  t.is(formatDhcpMessage(message({ options: new Map() })), 'DHCP BOOTREPLY xid=0x12345678 chaddr=02:00:5e:10:00:01 yiaddr=192.168.50.9 giaddr=192.168.60.1 broadcast');
});

/** The options area replaced by raw bytes, for layouts emit will not produce. */
function withRawOptions(raw: Uint8Array, fields: { sname?: Uint8Array; file?: Uint8Array } = {}): Uint8Array {
  const header = emitDhcpMessage(message({ options: new Map(), serverName: '', bootFile: '' })).subarray(0, DHCP_HEADER_LEN);
  const out = new Uint8Array(DHCP_HEADER_LEN + raw.length);
  out.set(header);
  out.set(raw, DHCP_HEADER_LEN);
  if (fields.sname) out.set(fields.sname, DhcpField.SNAME);
  if (fields.file) out.set(fields.file, DhcpField.FILE);
  return out;
}

const parseRaw = (bytes: Uint8Array) => parseDhcpMessage(bytes, 0, bytes.length);

test('pad and end: pads are skipped anywhere, nothing after END is read, a missing END ends at the buffer', (t) => {
  const padded = parseRaw(withRawOptions(hex('00 00 35 01 02 00 36 04 c0 a8 32 01 00 ff 33 04 00 00 00 10')))!;
  t.deepEqual([...padded.options.keys()], [53, 54], 'option 51 after END is not read');
  const unterminated = parseRaw(withRawOptions(hex('35 01 02 36 04 c0 a8 32 01')))!;
  t.deepEqual([...unterminated.options.keys()], [53, 54]);
  t.deepEqual(parseRaw(withRawOptions(hex('')))?.options, new Map(), 'no options at all');
});

test('option overload: options continue in file (1), sname (2) or both (3), joined in the order options, file, sname', (t) => {
  const file = hex('0f 03 61 62 63 ff'); // domain "abc"
  const sname = hex('0f 02 64 65 03 04 c0 a8 32 01 ff'); // domain continues "de", router
  const inFile = parseRaw(withRawOptions(hex('35 01 02 34 01 01 ff'), { file, sname }))!;
  t.deepEqual(inFile.options.get(DhcpOption.DOMAIN_NAME), textOption('abc'));
  t.is(inFile.options.get(DhcpOption.ROUTER), undefined, 'sname is a name here, not options');
  t.is(inFile.bootFile, '');
  t.not(inFile.serverName, '', 'sname read as a string');
  t.false(inFile.options.has(DhcpOption.OVERLOAD), 'option 52 is framing, not content');

  const inSname = parseRaw(withRawOptions(hex('35 01 02 34 01 02 ff'), { file, sname }))!;
  t.deepEqual(inSname.options.get(DhcpOption.DOMAIN_NAME), textOption('de'));
  t.deepEqual(inSname.options.get(DhcpOption.ROUTER), ipv4Option(SERVER_IP));
  t.is(inSname.serverName, '');

  const both = parseRaw(withRawOptions(hex('35 01 02 0f 01 78 34 01 03 ff'), { file, sname }))!;
  t.deepEqual(both.options.get(DhcpOption.DOMAIN_NAME), textOption('xabcde'), 'options field, then file, then sname');
  t.deepEqual(both.options.get(DhcpOption.ROUTER), ipv4Option(SERVER_IP));
});

test('malformed messages give null', (t) => {
  const good = emitDhcpMessage(message());
  t.truthy(parseRaw(good));
  t.is(parseDhcpMessage(good, 0, DHCP_HEADER_LEN - 1), null, 'shorter than header and cookie');
  t.is(parseDhcpMessage(good, 10, good.length), null, 'length beyond the buffer');
  t.is(parseDhcpMessage(good, -1, good.length), null, 'negative offset');
  const cookie = Uint8Array.from(good);
  cookie[DhcpField.COOKIE + 3] ^= 1;
  t.is(parseRaw(cookie), null, 'wrong magic cookie');
  const hlen = Uint8Array.from(good);
  hlen[DhcpField.HLEN] = 17;
  t.is(parseRaw(hlen), null, 'hlen beyond chaddr');
  const cases: [string, Uint8Array, { sname?: Uint8Array; file?: Uint8Array }?][] = [
    ['option length past the end', hex('35 01 02 36 05 c0 a8 32 01')],
    ['option code without a length byte', hex('35 01 02 36')],
    ['overload with length 2', hex('35 01 02 34 02 01 00 ff')],
    ['overload value 0', hex('35 01 02 34 01 00 ff')],
    ['overload value 4', hex('35 01 02 34 01 04 ff')],
    ['overload twice', hex('35 01 02 34 01 01 34 01 01 ff')],
    ['overload inside file', hex('35 01 02 34 01 01 ff'), { file: hex('34 01 02 ff') }],
    ['a truncated option in file', hex('35 01 02 34 01 01 ff'), { file: Uint8Array.from([...new Uint8Array(126), 0x03, 0x04]) }],
    ['a truncated option in sname', hex('35 01 02 34 01 02 ff'), { sname: Uint8Array.from([...new Uint8Array(63), 0x03]) }],
  ];
  for (const [what, raw, fields] of cases) t.is(parseRaw(withRawOptions(raw, fields)), null, what);
});

// ---- server replies --------------------------------------------------------------------

interface ReplyFrameOptions {
  type?: number | null;
  xid?: number;
  chaddr?: Uint8Array;
  yiaddr?: string;
  options?: [number, Uint8Array][];
  /** Raw options area instead of `options` (with the message type first unless type is null). */
  raw?: Uint8Array;
  op?: number;
  srcPort?: number;
  dstPort?: number;
  udpChecksum?: boolean;
}

/** A server's reply as dnsmasq would send it to a client without an address: broadcast, from port 67 to 68. */
function replyFrame(o: ReplyFrameOptions = {}): Buffer {
  const chaddr = new Uint8Array(16);
  chaddr.set(o.chaddr ?? MAC_BYTES);
  const options = new Map<number, Uint8Array>();
  if (o.type !== null) options.set(DhcpOption.MESSAGE_TYPE, Uint8Array.of(o.type ?? DhcpMessageType.OFFER));
  for (const [code, value] of o.options ?? [[DhcpOption.SERVER_ID, ipv4Option(SERVER_IP)]]) options.set(code, value);
  let payload = emitDhcpMessage(message({ op: o.op ?? BootpOp.REPLY, xid: o.xid ?? XID, chaddr, yiaddr: o.yiaddr ?? '192.168.50.9', hops: 0, giaddr: '0.0.0.0', serverName: '', bootFile: '', options }));
  if (o.raw) {
    const typed = o.type === null ? o.raw : Uint8Array.from([0x35, 1, o.type ?? DhcpMessageType.OFFER, ...o.raw]);
    payload = Uint8Array.from([...payload.subarray(0, DHCP_HEADER_LEN), ...typed]);
  }
  return buildUdp4({
    srcMac: SERVER_MAC,
    dstMac: BROADCAST_MAC,
    srcIp: SERVER_IP,
    dstIp: '255.255.255.255',
    srcPort: o.srcPort ?? 67,
    dstPort: o.dstPort ?? 68,
    payload,
    checksum: o.udpChecksum ?? true,
  });
}

const EXPECT = { xid: XID, mac: MAC_BYTES };
const FULL_OPTIONS: [number, Uint8Array][] = [
  [DhcpOption.SERVER_ID, ipv4Option(SERVER_IP)],
  [DhcpOption.SUBNET_MASK, ipv4Option('255.255.255.0')],
  [DhcpOption.ROUTER, ipv4Option('192.168.50.254', '192.168.50.253')],
  [DhcpOption.DNS_SERVERS, ipv4Option('192.0.2.53', '192.0.2.54')],
  [DhcpOption.DOMAIN_NAME, textOption('lan.example')],
  [DhcpOption.LEASE_TIME, u32Option(3600)],
  [DhcpOption.RENEWAL_TIME, u32Option(1000)],
  [DhcpOption.REBINDING_TIME, u32Option(3000)],
  [DhcpOption.INTERFACE_MTU, u16Option(1400)],
];

test('parse an ACK: every option the client asked for', (t) => {
  const reply = parseServerReply(replyFrame({ type: DhcpMessageType.ACK, options: FULL_OPTIONS }), EXPECT);
  t.deepEqual(reply, {
    type: 'ack',
    xid: XID,
    yourAddress: '192.168.50.9',
    serverId: SERVER_IP,
    serverMac: SERVER_MAC,
    sourceIp: SERVER_IP,
    subnetMask: '255.255.255.0',
    routers: ['192.168.50.254', '192.168.50.253'],
    dnsServers: ['192.0.2.53', '192.0.2.54'],
    domain: 'lan.example',
    leaseSeconds: 3600,
    t1Seconds: 1000,
    t2Seconds: 3000,
    mtu: 1400,
    message: null,
  } satisfies DhcpReply);
});

test('parse an OFFER and a NAK; a NAK may lack yiaddr and server id', (t) => {
  t.like(parseServerReply(replyFrame(), EXPECT), { type: 'offer', serverId: SERVER_IP, leaseSeconds: null, routers: [], mtu: null, domain: null });
  const nak = parseServerReply(replyFrame({ type: DhcpMessageType.NAK, yiaddr: '0.0.0.0', options: [[DhcpOption.MESSAGE, textOption('wrong network\0')]] }), EXPECT);
  t.like(nak, { type: 'nak', yourAddress: '0.0.0.0', serverId: null, message: 'wrong network' });
});

test('a reply in a frame with Ethernet padding, IPv4 options, no UDP checksum, or a partial one is still read', (t) => {
  const frame = replyFrame();
  t.truthy(parseServerReply(Buffer.concat([frame, Buffer.alloc(30)]), EXPECT), 'trailing padding');
  t.truthy(parseServerReply(replyFrame({ udpChecksum: false }), EXPECT), 'UDP checksum 0: none computed');

  // Four NOP option bytes in the IP header: IHL 6, total length + 4, header checksum redone.
  const withIpOptions = Buffer.concat([frame.subarray(0, 34), Buffer.from([1, 1, 1, 1]), frame.subarray(34)]);
  const ip = new Ipv4View();
  ip.resetRaw(withIpOptions, 14, withIpOptions.length - 14);
  ip.setHeaderLength(24);
  ip.setTotalLength(ip.totalLength() + 4);
  ip.fillChecksum();
  t.truthy(parseServerReply(withIpOptions, EXPECT), 'IPv4 options');

  // As a veth hands it over with tx checksum offload: the field holds only the pseudo-header sum.
  const partial = Buffer.from(frame);
  const udpLength = partial.readUInt16BE(38);
  partial.writeUInt16BE(pseudoSumV4(0xc0a83201, 0xffffffff, 17, udpLength), 40);
  t.is(parseServerReply(partial, EXPECT), null, 'not a valid checksum as such');
  t.truthy(parseServerReply(partial, EXPECT, { checksumPartial: true }), 'but accepted when the vnet header says it is partial');
});

test('replies for someone else, or not replies, give null', (t) => {
  t.truthy(parseServerReply(replyFrame(), EXPECT));
  t.is(parseServerReply(replyFrame({ xid: XID + 1 }), EXPECT), null, 'another xid');
  t.is(parseServerReply(replyFrame({ chaddr: hex('02 00 5e 10 00 02') }), EXPECT), null, 'another chaddr');
  t.is(parseServerReply(replyFrame(), { xid: XID, mac: hex('02 00 5e 10 00 02') }), null, 'another client asking');
  t.is(parseServerReply(replyFrame({ op: BootpOp.REQUEST }), EXPECT), null, 'a BOOTREQUEST');
  t.is(parseServerReply(replyFrame({ srcPort: 1067 }), EXPECT), null, 'not from port 67');
  t.is(parseServerReply(replyFrame({ dstPort: 1068 }), EXPECT), null, 'not to port 68');
  t.is(parseServerReply(replyFrame({ type: DhcpMessageType.REQUEST }), EXPECT), null, 'a REQUEST relayed back');
  t.is(parseServerReply(replyFrame({ type: DhcpMessageType.INFORM }), EXPECT), null);
  t.is(parseServerReply(replyFrame({ type: 9 }), EXPECT), null, 'unknown message type');
  t.is(parseServerReply(replyFrame({ type: null }), EXPECT), null, 'plain BOOTP, no message type');
  t.is(parseServerReply(replyFrame({ type: null, raw: hex('35 02 02 02 ff') }), EXPECT), null, 'message type two bytes long');
  t.is(parseServerReply(replyFrame({ yiaddr: '0.0.0.0' }), EXPECT), null, 'an OFFER of nothing');
  t.is(parseServerReply(replyFrame({ type: DhcpMessageType.ACK, yiaddr: '0.0.0.0' }), EXPECT), null, 'an ACK of nothing');
  const htype = replyFrame();
  htype[42 + DhcpField.HTYPE] = 6;
  t.truthy(parseServerReply(replyFrame(), EXPECT, { checksumPartial: true }));
  t.is(parseServerReply(htype, EXPECT, { checksumPartial: true }), null, 'not Ethernet (checksum skipped, so only htype refuses it)');
});

test('options the client reads with an impossible length make the reply malformed; odd values are dropped', (t) => {
  const withOption = (code: number, value: Uint8Array) => parseServerReply(replyFrame({ options: [[DhcpOption.SERVER_ID, ipv4Option(SERVER_IP)], [code, value]] }), EXPECT);
  const bad: [string, number, Uint8Array][] = [
    ['server id of 3 bytes', DhcpOption.SERVER_ID, hex('c0 a8 32')],
    ['mask of 5 bytes', DhcpOption.SUBNET_MASK, hex('ff ff ff 00 00')],
    ['router list of 5 bytes', DhcpOption.ROUTER, hex('c0 a8 32 01 02')],
    ['empty router list', DhcpOption.ROUTER, new Uint8Array(0)],
    ['DNS list of 7 bytes', DhcpOption.DNS_SERVERS, hex('c0 00 02 35 c0 00 02')],
    ['lease time of 3 bytes', DhcpOption.LEASE_TIME, hex('00 0e 10')],
    ['T1 of 2 bytes', DhcpOption.RENEWAL_TIME, hex('0e 10')],
    ['T2 of 8 bytes', DhcpOption.REBINDING_TIME, hex('00 00 0e 10 00 00 0e 10')],
    ['MTU of 4 bytes', DhcpOption.INTERFACE_MTU, hex('00 00 05 dc')],
  ];
  for (const [what, code, value] of bad) t.is(withOption(code, value), null, what);
  t.is(withOption(DhcpOption.INTERFACE_MTU, u16Option(67))?.mtu, null, 'an MTU below 68 is ignored');
  t.is(withOption(DhcpOption.DOMAIN_NAME, textOption('lan\nnameserver 6.6.6.6'))?.domain, null, 'a domain that would add resolv.conf lines is ignored');
  t.is(withOption(DhcpOption.DOMAIN_NAME, textOption('lan.example.'))?.domain, 'lan.example.');
});

test('malformed frames at every layer give null', (t) => {
  const good = replyFrame();
  t.truthy(parseServerReply(good, EXPECT));
  const mutate = (what: (f: Buffer) => void) => {
    const f = Buffer.from(good);
    what(f);
    return parseServerReply(f, EXPECT);
  };
  const refillIp = (f: Buffer) => {
    const ip = new Ipv4View();
    ip.resetRaw(f, 14, f.length - 14);
    ip.fillChecksum();
  };
  t.is(parseServerReply(good.subarray(0, 13), EXPECT), null, 'shorter than an Ethernet header');
  t.is(mutate((f) => f.writeUInt16BE(0x86dd, 12)), null, 'IPv6 EtherType');
  t.is(mutate((f) => f.writeUInt16BE(0x8100, 12)), null, 'VLAN-tagged');
  t.is(mutate((f) => (f[14] = 0x65)), null, 'IP version 6 in an IPv4 frame (checksum recomputed below too)');
  t.is(mutate((f) => { f[14] = 0x65; refillIp(f); }), null, 'IP version 6, checksum right');
  t.is(mutate((f) => { f[14] = 0x44; refillIp(f); }), null, 'IHL 4');
  t.is(mutate((f) => (f[24] ^= 0xff)), null, 'IPv4 header checksum wrong');
  t.is(mutate((f) => { f.writeUInt16BE(f.length - 14 + 1, 16); refillIp(f); }), null, 'IP total length beyond the frame');
  t.is(mutate((f) => { f[20] |= 0x20; refillIp(f); }), null, 'first fragment (MF)');
  t.is(mutate((f) => { f[21] = 1; refillIp(f); }), null, 'later fragment (offset)');
  t.is(mutate((f) => { f[23] = 6; refillIp(f); }), null, 'TCP');
  t.is(mutate((f) => f.writeUInt16BE(7, 38)), null, 'UDP length below its header');
  t.is(mutate((f) => f.writeUInt16BE(f.readUInt16BE(38) + 1, 38)), null, 'UDP length beyond the IP payload');
  t.is(mutate((f) => (f[40] ^= 0x01)), null, 'UDP checksum wrong');
  t.is(mutate((f) => (f[f.length - 1] ^= 0x01)), null, 'payload changed under the UDP checksum');
  const cookie = Buffer.from(good);
  cookie.writeUInt32BE(0x63825364, 42 + DhcpField.COOKIE);
  t.is(parseServerReply(cookie, EXPECT, { checksumPartial: true }), null, 'magic cookie (checksum skipped, so only the cookie refuses it)');
  // Shortened UDP: cut inside the fixed header; lengths and checksums consistent, so only the DHCP layer can refuse it.
  const short = buildUdp4({ srcMac: SERVER_MAC, dstMac: BROADCAST_MAC, srcIp: SERVER_IP, dstIp: '255.255.255.255', srcPort: 67, dstPort: 68, payload: good.subarray(42, 42 + 239) });
  t.is(parseServerReply(short, EXPECT), null, 'a DHCP message one byte short of the cookie');
  const truncatedOption = replyFrame({ raw: hex('36 04 c0 a8 32') });
  t.is(parseServerReply(truncatedOption, EXPECT), null, 'an option running past the datagram');
});

test('no frame makes the parser throw: every truncation and random corruption of real replies', (t) => {
  const frames = [replyFrame({ type: DhcpMessageType.ACK, options: FULL_OPTIONS }), replyFrame({ raw: hex('34 01 03 ff') })];
  let parsedTruncations = 0;
  for (const frame of frames) {
    for (let n = 0; n < frame.length; n++) {
      // Every prefix is shorter than the IP total length says, so none may parse.
      if (parseServerReply(frame.subarray(0, n), EXPECT) !== null) parsedTruncations++;
    }
  }
  t.is(parsedTruncations, 0);
  const random = mulberry32(1404);
  for (let round = 0; round < 3000; round++) {
    const f = Buffer.from(frames[round % frames.length]);
    const flips = 1 + Math.floor(random() * 8);
    for (let i = 0; i < flips; i++) f[Math.floor(random() * f.length)] = Math.floor(random() * 256);
    // Corruption past the headers should mostly meet the UDP checksum; also try with it skipped, to reach the DHCP parser.
    t.notThrows(() => parseServerReply(f, EXPECT));
    t.notThrows(() => parseServerReply(f, EXPECT, { checksumPartial: true }));
    const payload = f.subarray(42);
    t.notThrows(() => parseDhcpMessage(payload, 0, payload.length));
  }
  for (let round = 0; round < 500; round++) {
    const junk = Uint8Array.from({ length: Math.floor(random() * 700) }, () => Math.floor(random() * 256));
    t.notThrows(() => parseServerReply(junk, EXPECT, { checksumPartial: true }));
    t.notThrows(() => parseDhcpMessage(junk, 0, junk.length));
  }
});

// ---- leases -----------------------------------------------------------------------------

test('prefix lengths of masks; a non-contiguous one is refused', (t) => {
  t.is(prefixLengthOfMask(0xffffff00), 24);
  t.is(prefixLengthOfMask(0xffffffff), 32);
  t.is(prefixLengthOfMask(0), 0);
  t.is(prefixLengthOfMask(0xfffffffc), 30);
  t.is(prefixLengthOfMask(0xff00ff00), null);
  t.is(prefixLengthOfMask(0x00ffffff), null);
});

test('T1 and T2: the server\'s when consistent, 0.5 and 0.875 of the lease otherwise', (t) => {
  t.deepEqual(renewalTimes(3600), { t1Seconds: 1800, t2Seconds: 3150 });
  t.deepEqual(renewalTimes(3600, 1000, 3000), { t1Seconds: 1000, t2Seconds: 3000 });
  t.deepEqual(renewalTimes(3600, 3200, 3000), { t1Seconds: 1800, t2Seconds: 3000 }, 'T1 after T2');
  t.deepEqual(renewalTimes(3600, 1000, 4000), { t1Seconds: 1000, t2Seconds: 3150 }, 'T2 after the lease');
  t.deepEqual(renewalTimes(3600, 0, null), { t1Seconds: 1800, t2Seconds: 3150 }, 'T1 zero');
  t.deepEqual(renewalTimes(3600, null, 1000), { t1Seconds: 1000, t2Seconds: 1000 }, 'T2 alone, before half the lease: T1 no later than T2');
  t.deepEqual(renewalTimes(INFINITE_LEASE_SECONDS), { t1Seconds: INFINITE_LEASE_SECONDS, t2Seconds: INFINITE_LEASE_SECONDS });
});

test('a lease from an ACK, and the ACKs that cannot give one', (t) => {
  const ack = parseServerReply(replyFrame({ type: DhcpMessageType.ACK, options: FULL_OPTIONS }), EXPECT)!;
  const lease = leaseFromAck(ack, 50_000);
  t.deepEqual(lease, {
    address: '192.168.50.9',
    prefixLength: 24,
    subnetMask: '255.255.255.0',
    router: '192.168.50.254',
    dnsServers: ['192.0.2.53', '192.0.2.54'],
    domain: 'lan.example',
    leaseSeconds: 3600,
    t1Seconds: 1000,
    t2Seconds: 3000,
    mtu: 1400,
    serverId: SERVER_IP,
    serverMac: SERVER_MAC,
    obtainedAt: 50_000,
  });
  t.deepEqual(leaseDeadlines(lease as Exclude<typeof lease, string>), { t1At: 1_050_000, t2At: 3_050_000, expiresAt: 3_650_000 });
  t.like(leaseFromAck({ ...ack, subnetMask: null, yourAddress: '10.1.2.3' }, 0), { prefixLength: 8, subnetMask: '255.0.0.0' }, 'classful fallback, class A');
  t.like(leaseFromAck({ ...ack, subnetMask: null, yourAddress: '172.16.2.3' }, 0), { prefixLength: 16 });
  t.like(leaseFromAck({ ...ack, subnetMask: null }, 0), { prefixLength: 24 });
  t.like(leaseFromAck({ ...ack, serverId: null }, 0, '192.168.50.7'), { serverId: '192.168.50.7' }, 'a renewal ACK without option 54 keeps the known server');
  t.like(leaseFromAck({ ...ack, routers: [] }, 0), { router: null });
  t.regex(leaseFromAck({ ...ack, leaseSeconds: null }, 0) as string, /gives no lease time/);
  t.regex(leaseFromAck({ ...ack, leaseSeconds: 0 }, 0) as string, /gives no lease time/);
  t.regex(leaseFromAck({ ...ack, subnetMask: '255.0.255.0' }, 0) as string, /non-contiguous subnet mask 255\.0\.255\.0/);
  t.regex(leaseFromAck({ ...ack, serverId: null }, 0) as string, /does not identify the server/);
  t.deepEqual(leaseDeadlines({ ...(lease as Exclude<typeof lease, string>), leaseSeconds: INFINITE_LEASE_SECONDS }), { t1At: Infinity, t2At: Infinity, expiresAt: Infinity });
});
