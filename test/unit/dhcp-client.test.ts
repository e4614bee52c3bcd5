/**
 * The DHCP client's state machine on a fake clock against a scripted server:
 * DISCOVER -> OFFER -> REQUEST -> ACK, retransmission backoff, renewal at T1,
 * rebinding at T2, expiry, NAK, release, INIT-REBOOT, and acquire's deadline.
 */
import test from 'ava';
import { BROADCAST_MAC, buildUdp4 } from '../../src/packet/builders.js';
import { BootpOp, DhcpMessageType, DhcpOption, emitDhcpMessage, ipv4Option, messageTypeOf, textOption, u16Option, u32Option } from '../../src/dhcp/message.js';
import { parseDhcpFrame, type DhcpFrame } from '../../src/dhcp/frames.js';
import {
  DECLINE_WAIT_MS,
  DhcpClient,
  DhcpAcquireError,
  RENEW_RETRANSMIT_MIN_MS,
  type DhcpClientOptions,
  type DhcpLeaseLoss,
  type DhcpState,
} from '../../src/dhcp/client.js';
import type { DhcpLease } from '../../src/dhcp/lease.js';

const MAC = '02:00:5e:10:00:01';
const SERVER_MAC = '02:00:5e:10:00:fe';
const SERVER_IP = '192.168.50.1';
const OTHER_SERVER_MAC = '02:00:5e:10:00:fd';
const OTHER_SERVER_IP = '192.168.50.2';
const ADDRESS = '192.168.50.9';
const T0 = 1_000_000;

/** Timers on a clock that moves only when told to. */
class FakeClock {
  nowMs = T0;
  private nextId = 1;
  private timers = new Map<number, { at: number; callback: () => void }>();

  now = (): number => this.nowMs;
  setTimer = (callback: () => void, delayMs: number): unknown => {
    const id = this.nextId++;
    this.timers.set(id, { at: this.nowMs + delayMs, callback });
    return id;
  };
  clearTimer = (handle: unknown): void => {
    this.timers.delete(handle as number);
  };

  get pending(): number {
    return this.timers.size;
  }

  /** Delays of the timers now pending, in ms from now. */
  pendingDelays(): number[] {
    return [...this.timers.values()].map((t) => t.at - this.nowMs);
  }

  /** Runs the timers due up to now + ms, in order, each at its own time. */
  advance(ms: number): void {
    const until = this.nowMs + ms;
    for (;;) {
      let next: [number, { at: number; callback: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= until && (next === undefined || entry[1].at < next[1].at)) next = entry;
      if (next === undefined) break;
      this.timers.delete(next[0]);
      this.nowMs = Math.max(this.nowMs, next[1].at);
      next[1].callback();
    }
    this.nowMs = until;
  }
}

interface Sent {
  at: number;
  frame: DhcpFrame;
  type: number | null;
}

interface ReplyOptions {
  type: number;
  xid?: number;
  yiaddr?: string;
  serverMac?: string;
  serverIp?: string;
  /** Option 54; null leaves it out. Default serverIp. */
  serverId?: string | null;
  lease?: number | null;
  t1?: number;
  t2?: number;
  /** Unicast to this address and the client's MAC instead of broadcast. */
  unicastTo?: string;
  mac?: string;
  message?: string;
}

function replyFrame(o: ReplyOptions): Uint8Array {
  const chaddr = new Uint8Array(16);
  chaddr.set(Buffer.from((o.mac ?? MAC).replace(/:/g, ''), 'hex'));
  const serverIp = o.serverIp ?? SERVER_IP;
  const options = new Map<number, Uint8Array>([[DhcpOption.MESSAGE_TYPE, Uint8Array.of(o.type)]]);
  const serverId = o.serverId === undefined ? serverIp : o.serverId;
  if (serverId !== null) options.set(DhcpOption.SERVER_ID, ipv4Option(serverId));
  if (o.type !== DhcpMessageType.NAK) {
    if (o.lease !== null) options.set(DhcpOption.LEASE_TIME, u32Option(o.lease ?? 3600));
    if (o.t1 !== undefined) options.set(DhcpOption.RENEWAL_TIME, u32Option(o.t1));
    if (o.t2 !== undefined) options.set(DhcpOption.REBINDING_TIME, u32Option(o.t2));
    options.set(DhcpOption.SUBNET_MASK, ipv4Option('255.255.255.0'));
    options.set(DhcpOption.ROUTER, ipv4Option('192.168.50.254'));
    options.set(DhcpOption.DNS_SERVERS, ipv4Option('192.0.2.53'));
    options.set(DhcpOption.DOMAIN_NAME, textOption('lan.example'));
    options.set(DhcpOption.INTERFACE_MTU, u16Option(1450));
  }
  if (o.message !== undefined) options.set(DhcpOption.MESSAGE, textOption(o.message));
  const payload = emitDhcpMessage({
    op: BootpOp.REPLY,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: o.xid ?? 0,
    secs: 0,
    broadcast: o.unicastTo === undefined,
    ciaddr: '0.0.0.0',
    yiaddr: o.type === DhcpMessageType.NAK ? '0.0.0.0' : (o.yiaddr ?? ADDRESS),
    siaddr: '0.0.0.0',
    giaddr: '0.0.0.0',
    chaddr,
    serverName: '',
    bootFile: '',
    options,
  });
  return buildUdp4({
    srcMac: o.serverMac ?? SERVER_MAC,
    dstMac: o.unicastTo === undefined ? BROADCAST_MAC : MAC,
    srcIp: serverIp,
    dstIp: o.unicastTo ?? '255.255.255.255',
    srcPort: 67,
    dstPort: 68,
    payload,
  });
}

/** A client on a fake clock, what it sent, and what it emitted. */
function harness(options: Partial<DhcpClientOptions> = {}, randomValues?: () => number) {
  const clock = new FakeClock();
  const sent: Sent[] = [];
  const events: { name: string; lease?: DhcpLease; reason?: DhcpLeaseLoss; error?: Error }[] = [];
  const states: DhcpState[] = [];
  const client = new DhcpClient({
    mac: MAC,
    hostname: 'web',
    send: (bytes) => {
      const frame = parseDhcpFrame(bytes);
      if (frame === null) throw new Error('the client sent something that is not a DHCP frame');
      sent.push({ at: clock.nowMs - T0, frame, type: messageTypeOf(frame.message) });
    },
    now: clock.now,
    setTimer: clock.setTimer,
    clearTimer: clock.clearTimer,
    // 0.5: no jitter, and every xid 0x80000000 unless a test wants them apart.
    random: randomValues ?? (() => 0.5),
    ...options,
  });
  client.on('lease', (lease) => events.push({ name: 'lease', lease }));
  client.on('renewed', (lease) => events.push({ name: 'renewed', lease }));
  client.on('expired', (lease, reason) => events.push({ name: 'expired', lease, reason }));
  client.on('error', (error) => events.push({ name: 'error', error }));
  client.on('state', (to) => states.push(to));
  const last = () => sent[sent.length - 1];
  /** The server answers the client's last message. */
  const answer = (o: Omit<ReplyOptions, 'xid'> & { xid?: number }, receiveOpts?: { checksumPartial?: boolean }) =>
    client.receive(replyFrame({ xid: last().frame.message.xid, ...o }), receiveOpts);
  /** DISCOVER -> OFFER -> REQUEST -> ACK. */
  const bind = (ack: Partial<ReplyOptions> = {}) => {
    client.start();
    answer({ type: DhcpMessageType.OFFER });
    clock.advance(10);
    answer({ type: DhcpMessageType.ACK, ...ack });
  };
  return { clock, sent, events, states, client, last, answer, bind };
}

/** A random source that yields the given values in turn, then 0.5. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => (i < values.length ? values[i++] : 0.5);
}

test('DISCOVER -> OFFER -> REQUEST -> ACK: the lease, with everything the server said', async (t) => {
  const h = harness();
  const acquired = h.client.acquire(30_000);
  t.is(h.client.state, 'selecting');
  t.is(h.sent.length, 1);
  const discover = h.sent[0].frame;
  t.is(h.sent[0].type, DhcpMessageType.DISCOVER);
  t.like(discover, { srcMac: MAC, dstMac: BROADCAST_MAC, srcIp: '0.0.0.0', dstIp: '255.255.255.255' });
  t.true(discover.message.broadcast);
  t.deepEqual(discover.message.options.get(DhcpOption.HOSTNAME), textOption('web'));

  h.clock.advance(1500);
  t.true(h.answer({ type: DhcpMessageType.OFFER }));
  t.is(h.client.state, 'requesting');
  const request = h.last().frame;
  t.is(h.last().type, DhcpMessageType.REQUEST);
  t.is(request.message.xid, discover.message.xid, 'the REQUEST keeps the xid of the DISCOVER it follows');
  t.deepEqual(request.message.options.get(DhcpOption.REQUESTED_ADDRESS), ipv4Option(ADDRESS));
  t.deepEqual(request.message.options.get(DhcpOption.SERVER_ID), ipv4Option(SERVER_IP));
  t.is(request.message.secs, 1, 'secs counts from the DISCOVER');

  h.clock.advance(200);
  t.true(h.answer({ type: DhcpMessageType.ACK, lease: 3600 }));
  t.is(h.client.state, 'bound');
  const lease = await acquired;
  t.deepEqual(lease, {
    address: ADDRESS,
    prefixLength: 24,
    subnetMask: '255.255.255.0',
    router: '192.168.50.254',
    dnsServers: ['192.0.2.53'],
    domain: 'lan.example',
    leaseSeconds: 3600,
    t1Seconds: 1800,
    t2Seconds: 3150,
    mtu: 1450,
    serverId: SERVER_IP,
    serverMac: SERVER_MAC,
    obtainedAt: T0 + 1500,
  });
  t.deepEqual(h.client.lease, lease);
  t.deepEqual(h.events.map((e) => e.name), ['lease']);
  t.deepEqual(h.states, ['selecting', 'requesting', 'bound']);
  t.deepEqual(h.clock.pendingDelays(), [1_800_000 - 200], 'one timer, at T1 counted from when the REQUEST was sent');
  t.false(h.answer({ type: DhcpMessageType.ACK }), 'a duplicate ACK while bound is ignored');
  t.is(await h.client.acquire(1000), lease, 'acquire while bound answers at once');
});

test('DISCOVER retransmission: 4 s, 8 s, 16 s, 32 s, 64 s, then 64 s, each within 1 s of that; same xid, secs growing', (t) => {
  // xid from the first value; jitter from the rest: -1 s, +1 s (just under), 0, -0.5 s, ...
  const h = harness({}, sequence(0.25, 0, 0.9999, 0.5, 0.25, 0.75, 0.5, 0.5));
  h.client.start();
  h.clock.advance(400_000);
  const times = h.sent.map((s) => s.at);
  t.true(h.sent.every((s) => s.type === DhcpMessageType.DISCOVER));
  const gaps = times.slice(1).map((at, i) => at - times[i]);
  const expected = [3_000, 8_999.8, 16_000, 31_500, 64_500, 64_000, 64_000];
  t.true(
    expected.every((g, i) => Math.abs(gaps[i] - g) < 1e-6),
    `gaps ${gaps.slice(0, 7).join(', ')}`,
  );
  for (const [i, gap] of gaps.entries()) {
    const base = Math.min(4000 * 2 ** i, 64_000);
    t.true(gap >= base - 1000 && gap <= base + 1000, `gap ${i}: ${gap} within 1 s of ${base}`);
  }
  t.true(h.sent.every((s) => s.frame.message.xid === 0x40000000), 'one transaction throughout');
  t.deepEqual(
    h.sent.slice(0, 4).map((s) => s.frame.message.secs),
    [0, 3, 11, 27],
  );
  t.is(h.clock.pending, 1, 'one timer at a time');
});

test('acquire rejects in the stated time with one sentence, and leaves the client stopped with no timer', async (t) => {
  const h = harness();
  const acquired = h.client.acquire(10_000);
  h.clock.advance(9_999);
  t.is(h.client.state, 'selecting');
  h.clock.advance(1);
  const err = await t.throwsAsync(acquired, { instanceOf: DhcpAcquireError });
  t.is(
    err?.message,
    "no DHCP server answered on the LAN within 10 s: check that the uplink's network has one, or create the network without --ipam dhcp to give it static addresses",
  );
  t.is(h.client.state, 'stopped');
  t.is(h.clock.pending, 0);
  const sentBefore = h.sent.length;
  h.clock.advance(600_000);
  t.is(h.sent.length, sentBefore, 'nothing more is sent');
});

test('acquire: a server that offers but never confirms gets its own sentence; stop() rejects a pending acquire', async (t) => {
  const h = harness();
  const acquired = h.client.acquire(2_500);
  h.answer({ type: DhcpMessageType.OFFER });
  h.clock.advance(2_500);
  await t.throwsAsync(acquired, { message: /^the DHCP server 192\.168\.50\.1 offered an address but did not confirm it within 2\.5 s: / });

  const h2 = harness();
  const pending = h2.client.acquire(60_000);
  h2.client.stop();
  await t.throwsAsync(pending, { instanceOf: DhcpAcquireError, message: /stopped before it obtained a lease/ });
  t.is(h2.clock.pending, 0);
});

test('REQUEST retransmission: 4 tries for an OFFER, then discovery from scratch with a new xid', (t) => {
  const h = harness({}, sequence(0.1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9));
  h.client.start();
  h.answer({ type: DhcpMessageType.OFFER });
  h.clock.advance(4_000 + 8_000 + 16_000 + 32_000 - 1);
  const requests = h.sent.filter((s) => s.type === DhcpMessageType.REQUEST);
  t.deepEqual(requests.map((s) => s.at), [0, 4_000, 12_000, 28_000]);
  t.is(h.client.state, 'requesting');
  h.clock.advance(1);
  t.is(h.client.state, 'selecting');
  t.is(h.last().type, DhcpMessageType.DISCOVER);
  t.not(h.last().frame.message.xid, requests[0].frame.message.xid);
});

test('renewal at T1: a unicast REQUEST to the server with ciaddr; the ACK extends the lease from when it was sent', (t) => {
  const h = harness({}, sequence(0.1, 0.5, 0.5, 0.2));
  h.bind({ lease: 3600, t1: 1000, t2: 3000 });
  const lease = h.client.lease!;
  t.like(lease, { t1Seconds: 1000, t2Seconds: 3000 });
  const boundAt = h.clock.nowMs;
  h.clock.advance(lease.obtainedAt + 1_000_000 - boundAt - 1);
  t.is(h.client.state, 'bound', 'nothing before T1');
  const sentBefore = h.sent.length;
  h.clock.advance(1);
  t.is(h.client.state, 'renewing');
  t.is(h.sent.length, sentBefore + 1);
  const renew = h.last().frame;
  t.like(renew, { srcMac: MAC, dstMac: SERVER_MAC, srcIp: ADDRESS, dstIp: SERVER_IP });
  t.like(renew.message, { ciaddr: ADDRESS, broadcast: false, secs: 0 });
  t.false(renew.message.options.has(DhcpOption.REQUESTED_ADDRESS));
  t.false(renew.message.options.has(DhcpOption.SERVER_ID));
  t.not(renew.message.xid, h.sent[0].frame.message.xid, 'a new transaction');

  h.clock.advance(300);
  t.false(h.answer({ type: DhcpMessageType.ACK, xid: h.sent[0].frame.message.xid, unicastTo: ADDRESS }), 'an ACK for the old xid is not this one');
  t.true(h.answer({ type: DhcpMessageType.ACK, lease: 3600, t1: 1000, t2: 3000, unicastTo: ADDRESS }));
  t.is(h.client.state, 'bound');
  t.deepEqual(h.events.map((e) => e.name), ['lease', 'renewed']);
  const renewed = h.client.lease!;
  t.is(renewed.obtainedAt, h.clock.nowMs - 300, 'counted from the REQUEST, not the ACK');
  t.deepEqual(h.clock.pendingDelays(), [1_000_000 - 300]);
});

test('renewal retransmits after half the time to T2 (at least 60 s); rebinding at T2 broadcasts; any server may answer', (t) => {
  const h = harness();
  h.bind({ lease: 3600 }); // T1 1800 s, T2 3150 s
  const obtainedAt = h.client.lease!.obtainedAt;
  h.clock.advance(obtainedAt + 1_800_000 - h.clock.nowMs);
  t.is(h.client.state, 'renewing');
  const renewals = () => h.sent.filter((s) => s.frame.message.ciaddr === ADDRESS && s.frame.dstIp === SERVER_IP).map((s) => s.at + T0 - obtainedAt);
  h.clock.advance(obtainedAt + 3_150_000 - h.clock.nowMs - 1);
  // 1800 s, then half of what is left to 3150 s each time, but never less than 60 s apart.
  t.deepEqual(renewals(), [1_800_000, 2_475_000, 2_812_500, 2_981_250, 3_065_625, 3_125_625]);
  t.is(h.client.state, 'renewing');

  h.clock.advance(1);
  t.is(h.client.state, 'rebinding');
  const rebind = h.last().frame;
  t.like(rebind, { srcIp: ADDRESS, dstIp: '255.255.255.255', dstMac: BROADCAST_MAC });
  t.like(rebind.message, { ciaddr: ADDRESS, broadcast: false });
  t.false(rebind.message.options.has(DhcpOption.SERVER_ID));

  const rebinds = h.sent.length;
  h.clock.advance(225_000 - 1);
  t.is(h.sent.length, rebinds);
  h.clock.advance(1);
  t.is(h.sent.length, rebinds + 1);
  t.is(h.last().frame.message.xid, rebind.message.xid, 'rebinding retransmits in the same transaction');
  t.is(h.last().at + T0 - obtainedAt, 3_150_000 + 225_000, 'half the time to the lease end');

  t.true(h.answer({ type: DhcpMessageType.ACK, serverIp: OTHER_SERVER_IP, serverMac: OTHER_SERVER_MAC, unicastTo: ADDRESS, lease: 7200 }));
  t.is(h.client.state, 'bound');
  t.like(h.client.lease, { address: ADDRESS, serverId: OTHER_SERVER_IP, serverMac: OTHER_SERVER_MAC, leaseSeconds: 7200 });
  t.deepEqual(h.events.map((e) => e.name), ['lease', 'renewed']);
});

test('expiry: no server answers until the lease ends; the lease is lost and discovery asks for the same address', (t) => {
  const h = harness();
  h.bind({ lease: 120 }); // T1 60 s, T2 105 s
  const obtainedAt = h.client.lease!.obtainedAt;
  h.clock.advance(obtainedAt + 120_000 - h.clock.nowMs - 1);
  t.is(h.client.state, 'rebinding');
  t.deepEqual(h.events.map((e) => e.name), ['lease']);
  h.clock.advance(1);
  t.deepEqual(h.events.map((e) => [e.name, e.reason]), [['lease', undefined], ['expired', 'expired']]);
  t.is(h.events[1].lease!.address, ADDRESS);
  t.is(h.client.lease, null);
  t.is(h.client.state, 'selecting');
  t.is(h.last().type, DhcpMessageType.DISCOVER);
  t.deepEqual(h.last().frame.message.options.get(DhcpOption.REQUESTED_ADDRESS), ipv4Option(ADDRESS));
  // With T1 60 s the renewal's 60 s minimum reaches past T2: one renewal, one rebinding.
  const kinds = h.sent.map((s) => `${s.type}:${s.frame.dstIp}`);
  t.deepEqual(kinds, ['1:255.255.255.255', '3:255.255.255.255', `3:${SERVER_IP}`, '3:255.255.255.255', '1:255.255.255.255']);
  // And a new lease comes as 'lease' again.
  h.answer({ type: DhcpMessageType.OFFER });
  h.answer({ type: DhcpMessageType.ACK });
  t.deepEqual(h.events.map((e) => e.name), ['lease', 'expired', 'lease']);
});

test('NAK while requesting: discovery again at once; a second NAK in a row waits the backoff', (t) => {
  const h = harness({}, sequence(0.1, 0.5, 0.2, 0.5, 0.5, 0.3));
  h.client.start();
  h.answer({ type: DhcpMessageType.OFFER });
  t.true(h.answer({ type: DhcpMessageType.NAK, message: 'address not available' }));
  t.is(h.client.state, 'selecting');
  t.is(h.last().type, DhcpMessageType.DISCOVER);
  t.not(h.last().frame.message.xid, h.sent[0].frame.message.xid, 'a new transaction');
  t.false(h.last().frame.message.options.has(DhcpOption.REQUESTED_ADDRESS), 'the refused address is not asked for again');
  t.deepEqual(h.events.map((e) => e.error?.message), ['the DHCP server 192.168.50.1 refused: address not available']);
  h.answer({ type: DhcpMessageType.OFFER });
  t.true(h.answer({ type: DhcpMessageType.NAK, serverId: null }));
  t.is(h.client.state, 'init');
  const sentBefore = h.sent.length;
  h.clock.advance(3_999);
  t.is(h.sent.length, sentBefore);
  h.clock.advance(1);
  t.is(h.client.state, 'selecting');
  t.is(h.sent.length, sentBefore + 1);
  h.answer({ type: DhcpMessageType.OFFER });
  h.answer({ type: DhcpMessageType.ACK });
  t.is(h.client.state, 'bound', 'an ACK resets the NAK count');
});

test('NAK while renewing: the lease is lost (reason nak) and discovery starts', (t) => {
  const h = harness();
  h.bind({ lease: 600 });
  h.client.renew();
  t.is(h.client.state, 'renewing');
  t.true(h.answer({ type: DhcpMessageType.NAK, unicastTo: ADDRESS }));
  t.deepEqual(h.events.map((e) => [e.name, e.reason]), [['lease', undefined], ['expired', 'nak']]);
  t.is(h.client.state, 'selecting');
  t.is(h.client.lease, null);
});

test('replies that are not for this exchange are ignored', (t) => {
  const h = harness();
  h.client.start();
  t.false(h.answer({ type: DhcpMessageType.ACK }), 'an ACK while selecting');
  t.false(h.answer({ type: DhcpMessageType.NAK }), 'a NAK while selecting');
  t.false(h.answer({ type: DhcpMessageType.OFFER, serverId: null }), 'an OFFER without server id');
  t.false(h.answer({ type: DhcpMessageType.OFFER, xid: 7 }), 'another xid');
  t.false(h.answer({ type: DhcpMessageType.OFFER, mac: '02:00:5e:10:00:02' }), "another client's");
  t.false(h.client.receive(new Uint8Array(60)), 'not DHCP at all');
  t.is(h.client.state, 'selecting');
  t.true(h.answer({ type: DhcpMessageType.OFFER }));
  t.false(h.answer({ type: DhcpMessageType.OFFER, serverIp: OTHER_SERVER_IP }), 'a later OFFER while requesting');
  t.false(h.answer({ type: DhcpMessageType.ACK, serverIp: OTHER_SERVER_IP }), "another server's ACK");
  t.false(h.answer({ type: DhcpMessageType.NAK, serverIp: OTHER_SERVER_IP }), "another server's NAK");
  t.is(h.client.state, 'requesting');
  t.true(h.answer({ type: DhcpMessageType.ACK }, { checksumPartial: true }));
  t.is(h.client.state, 'bound');
});

test('an ACK the client cannot use is reported and treated as no answer', (t) => {
  const h = harness();
  h.client.start();
  h.answer({ type: DhcpMessageType.OFFER });
  t.false(h.answer({ type: DhcpMessageType.ACK, lease: null }));
  t.is(h.client.state, 'requesting');
  t.regex(h.events[0].error!.message, /gives no lease time/);
  t.true(h.answer({ type: DhcpMessageType.ACK, lease: 60 }));
});

test('the server gives no T1/T2: renewal at 0.5 and rebinding at 0.875 of the lease', (t) => {
  const h = harness();
  h.bind({ lease: 1000 });
  t.like(h.client.lease, { t1Seconds: 500, t2Seconds: 875 });
  const obtainedAt = h.client.lease!.obtainedAt;
  h.clock.advance(obtainedAt + 500_000 - h.clock.nowMs);
  t.is(h.client.state, 'renewing');
  h.clock.advance(obtainedAt + 875_000 - h.clock.nowMs);
  t.is(h.client.state, 'rebinding');
});

test('release: a RELEASE unicast to the server with ciaddr, server id and client id; the client stops', (t) => {
  const h = harness();
  t.false(h.client.release(), 'nothing to release before a lease');
  const h2 = harness();
  h2.bind();
  t.true(h2.client.release());
  const release = h2.last();
  t.is(release.type, DhcpMessageType.RELEASE);
  t.like(release.frame, { srcIp: ADDRESS, dstIp: SERVER_IP, dstMac: SERVER_MAC });
  t.like(release.frame.message, { ciaddr: ADDRESS, broadcast: false });
  t.deepEqual(release.frame.message.options.get(DhcpOption.SERVER_ID), ipv4Option(SERVER_IP));
  t.deepEqual(release.frame.message.options.get(DhcpOption.CLIENT_ID), Uint8Array.from([1, 2, 0, 0x5e, 0x10, 0, 1]));
  t.is(h2.client.state, 'stopped');
  t.is(h2.client.lease, null);
  t.is(h2.clock.pending, 0);
  const count = h2.sent.length;
  h2.clock.advance(10_000_000);
  t.is(h2.sent.length, count, 'nothing after the release, not even at T1');
  h2.client.start();
  t.is(h2.last().type, DhcpMessageType.DISCOVER, 'a released address is not asked for again');
  t.false(h2.last().frame.message.options.has(DhcpOption.REQUESTED_ADDRESS));
});

test('stop keeps the lease at the server; start again asks for it back with INIT-REBOOT, then discovers if nobody answers', (t) => {
  const h = harness();
  h.bind();
  h.client.stop();
  t.is(h.client.state, 'stopped');
  t.is(h.clock.pending, 0);
  t.is(h.sent.filter((s) => s.type === DhcpMessageType.RELEASE).length, 0);
  t.is(h.client.lease?.address, ADDRESS, 'the last lease stays readable');
  h.clock.advance(100_000);
  h.client.start();
  t.is(h.client.state, 'rebooting');
  const reboot = h.last().frame;
  t.like(reboot, { srcIp: '0.0.0.0', dstIp: '255.255.255.255' });
  t.deepEqual(reboot.message.options.get(DhcpOption.REQUESTED_ADDRESS), ipv4Option(ADDRESS));
  t.false(reboot.message.options.has(DhcpOption.SERVER_ID));
  h.clock.advance(4_000);
  t.is(h.last().frame.message.xid, reboot.message.xid, 'one retransmission');
  t.is(h.client.state, 'rebooting');
  h.clock.advance(8_000);
  t.is(h.client.state, 'selecting', 'after two tries');
  t.deepEqual(h.last().frame.message.options.get(DhcpOption.REQUESTED_ADDRESS), ipv4Option(ADDRESS), 'still suggesting the address');
});

test('a remembered address (requestedAddress) starts with INIT-REBOOT; its ACK gives the lease, its NAK sends the client to discovery', (t) => {
  const h = harness({ requestedAddress: '192.168.50.77' });
  h.client.start();
  t.is(h.client.state, 'rebooting');
  t.deepEqual(h.last().frame.message.options.get(DhcpOption.REQUESTED_ADDRESS), ipv4Option('192.168.50.77'));
  t.true(h.answer({ type: DhcpMessageType.ACK, yiaddr: '192.168.50.77' }));
  t.like(h.client.lease, { address: '192.168.50.77', serverId: SERVER_IP });
  t.deepEqual(h.events.map((e) => e.name), ['lease']);

  const h2 = harness({ requestedAddress: '192.168.50.77' });
  h2.client.start();
  t.true(h2.answer({ type: DhcpMessageType.NAK }));
  t.is(h2.client.state, 'selecting');
  t.false(h2.last().frame.message.options.has(DhcpOption.REQUESTED_ADDRESS));
  t.deepEqual(h2.events.map((e) => e.name), [], 'no lease was held, so none expired');
});

test('decline: a DECLINE for the address, ten seconds of quiet, then discovery without it', (t) => {
  const h = harness();
  t.false(h.client.decline());
  h.bind();
  t.true(h.client.decline('arp conflict'));
  const decline = h.last();
  t.is(decline.type, DhcpMessageType.DECLINE);
  t.deepEqual(decline.frame.message.options.get(DhcpOption.REQUESTED_ADDRESS), ipv4Option(ADDRESS));
  t.deepEqual(decline.frame.message.options.get(DhcpOption.SERVER_ID), ipv4Option(SERVER_IP));
  t.is(h.client.state, 'init');
  t.is(h.client.lease, null);
  const count = h.sent.length;
  h.clock.advance(DECLINE_WAIT_MS - 1);
  t.is(h.sent.length, count);
  h.clock.advance(1);
  t.is(h.last().type, DhcpMessageType.DISCOVER);
  t.false(h.last().frame.message.options.has(DhcpOption.REQUESTED_ADDRESS));
});

test('a renewal that grants another address: the old lease is reported lost (replaced), the new one as a lease', (t) => {
  const h = harness();
  h.bind();
  h.client.renew();
  h.answer({ type: DhcpMessageType.ACK, yiaddr: '192.168.50.10', unicastTo: ADDRESS });
  t.deepEqual(h.events.map((e) => [e.name, e.reason, e.lease?.address]), [
    ['lease', undefined, ADDRESS],
    ['expired', 'replaced', ADDRESS],
    ['lease', undefined, '192.168.50.10'],
  ]);
});

test('an infinite lease arms no timer; a lease longer than setTimeout allows is waited for in pieces', (t) => {
  const h = harness();
  h.bind({ lease: 0xffffffff });
  t.is(h.client.state, 'bound');
  t.is(h.clock.pending, 0);
  t.like(h.client.lease, { leaseSeconds: 0xffffffff, t1Seconds: 0xffffffff });

  const h2 = harness();
  h2.bind({ lease: 60 * 86_400 }); // T1 at 30 days, past setTimeout's 24.8
  t.true(h2.clock.pendingDelays()[0] <= 0x7fffffff);
  const obtainedAt = h2.client.lease!.obtainedAt;
  h2.clock.advance(obtainedAt + 30 * 86_400_000 - h2.clock.nowMs - 1);
  t.is(h2.client.state, 'bound');
  h2.clock.advance(1);
  t.is(h2.client.state, 'renewing');
});

test('a send that throws is reported and retried on schedule', (t) => {
  let fail = true;
  const frames: Uint8Array[] = [];
  const h = harness({
    send: (frame) => {
      if (fail) throw new Error('ENOBUFS');
      frames.push(frame);
    },
  });
  h.client.start();
  t.is(h.events[0].error?.message, 'ENOBUFS');
  t.is(h.client.state, 'selecting');
  fail = false;
  h.clock.advance(4_000);
  t.is(frames.length, 1, 'the retransmission went out');
});

test('bad options are refused when the client is made', (t) => {
  t.throws(() => new DhcpClient({ mac: 'nope', send: () => undefined }), { instanceOf: RangeError, message: /not a MAC address/ });
  t.throws(() => new DhcpClient({ mac: MAC, hostname: 'has space', send: () => undefined }), { instanceOf: RangeError, message: /hostname/ });
});

test('renewal respects the 60 s minimum between retransmissions', (t) => {
  const h = harness();
  h.bind({ lease: 200, t1: 100, t2: 190 });
  const obtainedAt = h.client.lease!.obtainedAt;
  h.clock.advance(obtainedAt + 100_000 - h.clock.nowMs);
  t.is(h.client.state, 'renewing');
  const firstRenewal = h.sent.length;
  h.clock.advance(RENEW_RETRANSMIT_MIN_MS - 1);
  t.is(h.sent.length, firstRenewal, 'half of 90 s would be 45 s: the minimum holds it to 60 s');
  h.clock.advance(1);
  t.is(h.sent.length, firstRenewal + 1);
});
