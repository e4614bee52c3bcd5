/**
 * A trace is the slow path run dry: for every network driver, the same frames
 * go through Switch.trace and then through forwarding, and the two must
 * decide the same (the egress port, a flood to the same ports, or a drop for
 * the same reason), while the trace itself leaves no trace: no counter, no
 * learned MAC, no connection, no NAT port, no cached flow.
 */
import test, { type ExecutionContext } from 'ava';
import { buildArpRequest, buildIcmp4Echo, buildTcp4, buildUdp4, filler } from '../../src/packet/builders.js';
import { DROP_REASON_NAMES } from '../../src/packet/drop-reasons.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { allocateCounters, COUNTER_COLUMNS, DROP_BASE } from '../../src/switch/counters.js';
import { MacTable } from '../../src/switch/mac-table.js';
import { Switch, type SwitchTrace } from '../../src/switch/switch.js';
import { DIR_OUT } from '../../src/vfp/compile.js';
import { validateLayer, type PortPolicy } from '../../src/vfp/policy.js';
import { OverlayIo, type Datagram, type Sent } from './helpers/overlay-io.js';

const START_MS = 1e7;
const MAX_PORTS = 16;
const fdOf = (port: number) => 100 + port;

/** What forwarding did with one frame, in the terms of a trace. */
type Decision = { kind: 'drop'; reason: string } | { kind: 'ports'; ports: number[] };

function makeSwitch() {
  const io = new OverlayIo(4096);
  const counters = new Float64Array(allocateCounters(MAX_PORTS));
  let now = START_MS;
  const macTable = new MacTable({ maxEntries: 64, agingSeconds: 300 });
  const sw = new Switch(io, counters, macTable, { portStopped: () => {} }, () => now, {
    vfp: { maxFlows: 1024, maxTranspositions: 64, conntrack: { capacity: 4096 } },
  });
  return { io, sw, counters, macTable, tick: (ms: number) => (now += ms) };
}
type Env = ReturnType<typeof makeSwitch>;

/** Everything a trace must leave as it was. */
function footprint(env: Env): string {
  return JSON.stringify({
    counters: Array.from(env.counters),
    macs: env.macTable.entries(START_MS),
    macCounters: env.macTable.counters(),
    connections: env.sw.vfp.conntrack.size,
    flows: env.sw.vfp.flows.size,
    vfp: env.sw.vfp.stats,
    nat: env.sw.natState(START_MS),
    overlay: env.sw.overlayState(START_MS),
  });
}

/** The ports the frame reached, from the recorded TAP writes and UDP sends (a datagram means the tunnel port), or the drop counted. */
function observe(env: Env, before: Float64Array, sent: Sent[], datagrams: Datagram[], tunnelPort: number): Decision {
  if (sent.length > 0 || datagrams.length > 0) {
    const ports = new Set(sent.map((s) => s.fd - 100));
    if (datagrams.length > 0) ports.add(tunnelPort);
    return { kind: 'ports', ports: [...ports].sort((a, b) => a - b) };
  }
  const reasons: string[] = [];
  for (let port = 0; port < MAX_PORTS; port++) {
    for (let code = 1; code < DROP_REASON_NAMES.length; code++) {
      const i = port * COUNTER_COLUMNS + DROP_BASE + code;
      if (env.counters[i] > before[i]) reasons.push(DROP_REASON_NAMES[code]);
    }
  }
  return { kind: 'drop', reason: reasons.join('+') || 'none counted' };
}

/**
 * Traces `frame` at `port`, then forwards it (`forward` places it and runs the
 * batch); asserts both decided the same, and that the trace changed nothing.
 * `members` are the network's member ports, for what a flood reaches.
 */
function sameDecision(t: ExecutionContext, env: Env, what: string, port: number, frame: Buffer, members: number[], forward: () => { sent: Sent[]; datagrams: Datagram[] }, opts: { tunnelPort?: number; sent?: (sent: Sent[], traced: SwitchTrace) => void } = {}): Decision {
  const untouched = footprint(env);
  const traced = env.sw.trace(port, DIR_OUT, frame);
  t.is(footprint(env), untouched, `${what}: the trace left a mark (counters, MACs, connections, flows, NAT or overlay state)`);
  let expected: Decision;
  if (traced.verdict === 'block') expected = { kind: 'drop', reason: DROP_REASON_NAMES[traced.reason] };
  else if (traced.egressPort === 'flood') {
    t.deepEqual(traced.floodPorts!.filter((p) => !members.includes(p) || p === port), [], `${what}: a flood reaches only other members`);
    expected = { kind: 'ports', ports: [...traced.floodPorts!].sort((a, b) => a - b) };
  } else expected = { kind: 'ports', ports: [traced.egressPort as number] };
  const before = Float64Array.from(env.counters);
  const { sent, datagrams } = forward();
  const actual = observe(env, before, sent, datagrams, opts.tunnelPort ?? -1);
  t.deepEqual(actual, expected, `${what}: forwarding did not do what the trace said (trace: ${JSON.stringify(traced)})`);
  opts.sent?.(sent, traced);
  return expected;
}

function acl(blockInTcpPort: number): PortPolicy {
  return {
    layers: [
      validateLayer({
        name: 'acl',
        priority: 100,
        defaultIn: 'allow',
        defaultOut: 'allow',
        groups: [{ name: 'default', priority: 100, rules: [{ id: 'no-http', priority: 100, direction: 'in', action: 'block', match: { protocol: 'tcp', dstPorts: blockInTcpPort } }] }],
      }),
    ],
    spoofGuard: { enabled: false, mac: '00:00:00:00:00:00', ips: [] },
    qos: null,
  };
}

const mac = (n: number) => `02:76:0a:00:00:${n.toString(16).padStart(2, '0')}`;
const ip = (n: number) => `10.0.0.${n}`;

test('internal network: flood, forward, policy block, spoof guard and same-segment drops decide alike in trace and forwarding', (t) => {
  const env = makeSwitch();
  env.sw.addNetwork(1, 'int');
  const guarded: PortPolicy = { layers: [], spoofGuard: { enabled: true, mac: mac(2), ips: [ip(2)] }, qos: null };
  env.sw.addPort({ portId: 0, networkId: 1, fd: fdOf(0), name: 'c0', policy: guarded });
  env.sw.addPort({ portId: 1, networkId: 1, fd: fdOf(1), name: 'c1' });
  env.sw.addPort({ portId: 2, networkId: 1, fd: fdOf(2), name: 'c2', policy: acl(80) });
  const members = [0, 1, 2];
  const fromTap = (port: number, frame: Buffer) => () => {
    env.io.placeTap(0, frame);
    env.sw.receive(port, 1);
    return env.io.take();
  };
  const check = (what: string, port: number, frame: Buffer) => sameDecision(t, env, what, port, frame, members, fromTap(port, frame));

  // Not learned by the trace: c1's frame to c0 still floods after a trace of c0's broadcast.
  env.sw.trace(0, DIR_OUT, buildArpRequest({ srcMac: mac(2), srcIp: ip(2), targetIp: ip(3) }));
  t.is(env.sw.trace(1, DIR_OUT, buildUdp4({ srcMac: mac(3), dstMac: mac(2), srcIp: ip(3), dstIp: ip(2), payload: filler(8) })).egressPort, 'flood');

  t.deepEqual(check('broadcast ARP from c0', 0, buildArpRequest({ srcMac: mac(2), srcIp: ip(2), targetIp: ip(3) })), { kind: 'ports', ports: [1, 2] });
  t.deepEqual(check('unicast to a MAC not learned', 1, buildUdp4({ srcMac: mac(3), dstMac: mac(4), srcIp: ip(3), dstIp: ip(4), payload: filler(8) })), { kind: 'ports', ports: [0, 2] });
  t.deepEqual(check('unicast to learned c0', 1, buildUdp4({ srcMac: mac(3), dstMac: mac(2), srcIp: ip(3), dstIp: ip(2), payload: filler(8) })), { kind: 'ports', ports: [0] });
  fromTap(2, buildArpRequest({ srcMac: mac(4), srcIp: ip(4), targetIp: ip(2) }))();
  t.deepEqual(check("TCP to c2's blocked port", 0, buildTcp4({ srcMac: mac(2), dstMac: mac(4), srcIp: ip(2), dstIp: ip(4), srcPort: 40000, dstPort: 80, flags: TcpFlags.SYN })), {
    kind: 'drop',
    reason: 'policyBlock',
  });
  t.deepEqual(check('TCP to an allowed port of c2', 0, buildTcp4({ srcMac: mac(2), dstMac: mac(4), srcIp: ip(2), dstIp: ip(4), srcPort: 40000, dstPort: 8080, flags: TcpFlags.SYN })), {
    kind: 'ports',
    ports: [2],
  });
  t.deepEqual(check('a foreign source MAC from c0', 0, buildUdp4({ srcMac: mac(9), dstMac: mac(3), srcIp: ip(2), dstIp: ip(3), payload: filler(8) })), { kind: 'drop', reason: 'spoofMac' });
  t.deepEqual(check('c1 to its own MAC', 1, buildUdp4({ srcMac: mac(3), dstMac: mac(3), srcIp: ip(3), dstIp: ip(3), payload: filler(8) })), { kind: 'drop', reason: 'sameSegment' });
  // Forwarding learns a new source before it looks the destination up: to itself, that is a loop.
  t.deepEqual(check('a new MAC of c1 to itself', 1, buildUdp4({ srcMac: mac(7), dstMac: mac(7), srcIp: ip(3), dstIp: ip(3), payload: filler(8) })), { kind: 'drop', reason: 'sameSegment' });
  // Unknown unicast to TCP/80: flooded, and c2's inbound layer keeps its copy.
  t.deepEqual(check('a flood that one receiver blocks', 0, buildTcp4({ srcMac: mac(2), dstMac: mac(8), srcIp: ip(2), dstIp: ip(8), srcPort: 40001, dstPort: 80, flags: TcpFlags.SYN })), {
    kind: 'ports',
    ports: [1],
  });
});

test('nat network: the gateway stage answers, translates and refuses alike in trace and forwarding, from containers and from the host port', (t) => {
  const env = makeSwitch();
  const NET = 2;
  const HOST = 9;
  env.sw.addNetwork(NET, 'mynat', { nat: {
    subnet: '172.18.0.0/24',
    gatewayIp: '172.18.0.1',
    gatewayMac: '02:76:ac:12:00:01',
    externalIp: '100.127.0.2',
    externalMac: '02:76:64:7f:00:02',
    hostMac: '02:76:64:7f:00:01',
    portFirst: 1024,
    portLast: 65535,
  } });
  const cmac = (p: number) => `02:76:ac:12:00:${(p + 2).toString(16).padStart(2, '0')}`;
  const cip = (p: number) => `172.18.0.${p + 2}`;
  for (const p of [0, 1]) env.sw.addPort({ portId: p, networkId: NET, fd: fdOf(p), name: `c${p}`, ip: cip(p), mac: cmac(p) });
  env.sw.addPort({ portId: HOST, networkId: NET, fd: fdOf(HOST), name: 'host', external: true });
  env.sw.setPublished(NET, [{ protocol: 'tcp', externalPort: 8080, ip: cip(1), port: 80 }]);
  const members = [0, 1];
  const fromTap = (port: number, frame: Buffer) => () => {
    env.io.placeTap(0, frame);
    env.sw.receive(port, 1);
    return env.io.take();
  };
  const check = (what: string, port: number, frame: Buffer, sent?: (sent: Sent[], traced: SwitchTrace) => void) => sameDecision(t, env, what, port, frame, members, fromTap(port, frame), { sent });
  const declared = env.sw.stages(NET).find((s) => s.name === 'nat')!.dropReasons;
  const hostMac = '02:76:64:7f:00:01';
  const extMac = '02:76:64:7f:00:02';

  t.deepEqual(check('ARP for the gateway', 0, buildArpRequest({ srcMac: cmac(0), srcIp: cip(0), targetIp: '172.18.0.1' })), { kind: 'ports', ports: [0] });
  t.deepEqual(check('ping the gateway', 0, buildIcmp4Echo({ srcMac: cmac(0), dstMac: '02:76:ac:12:00:01', srcIp: cip(0), dstIp: '172.18.0.1', ident: 7, seq: 1 })), { kind: 'ports', ports: [0] });
  const syn = buildTcp4({ srcMac: cmac(0), dstMac: '02:76:ac:12:00:01', srcIp: cip(0), dstIp: '198.18.0.2', srcPort: 40000, dstPort: 443, flags: TcpFlags.SYN });
  const translated = (sent: Sent[], traced: SwitchTrace) => {
    t.is(traced.rewrite?.srcIp, '172.18.0.2 -> 100.127.0.2', `the trace shows the translation: ${JSON.stringify(traced.rewrite)}`);
    const frame = sent[0].wire.subarray(sent[0].wire.length - syn.length);
    t.is(frame.readUInt16BE(34), Number(traced.rewrite?.srcPort), 'the trace names the very NAT port the frame then gets');
  };
  t.deepEqual(check('TCP from a container to the outside', 0, syn, translated), { kind: 'ports', ports: [HOST] });
  t.deepEqual(check('a second TCP flow to the outside', 0, buildTcp4({ srcMac: cmac(0), dstMac: '02:76:ac:12:00:01', srcIp: cip(0), dstIp: '198.18.0.2', srcPort: 40001, dstPort: 443, flags: TcpFlags.SYN })), {
    kind: 'ports',
    ports: [HOST],
  });
  t.deepEqual(check('the host asks for the external address', HOST, buildArpRequest({ srcMac: hostMac, srcIp: '100.127.0.1', targetIp: '100.127.0.2' })), { kind: 'ports', ports: [HOST] });
  t.deepEqual(check('the host to a published port', HOST, buildTcp4({ srcMac: hostMac, dstMac: extMac, srcIp: '100.127.0.1', dstIp: '100.127.0.2', srcPort: 50000, dstPort: 8080, flags: TcpFlags.SYN })), {
    kind: 'ports',
    ports: [1],
  });
  t.deepEqual(check('the host to a port nothing publishes', HOST, buildTcp4({ srcMac: hostMac, dstMac: extMac, srcIp: '100.127.0.1', dstIp: '100.127.0.2', srcPort: 50000, dstPort: 9999, flags: TcpFlags.SYN })), {
    kind: 'drop',
    reason: 'natNoMapping',
  });
  t.deepEqual(check('the host to a container address', HOST, buildUdp4({ srcMac: hostMac, dstMac: extMac, srcIp: '100.127.0.1', dstIp: cip(0), payload: filler(8) })), { kind: 'drop', reason: 'natNoMapping' });
  t.true(declared.includes('natNoMapping'), `the NAT stage declares the drops it gives: ${declared.join(', ')}`);
  fromTap(1, buildArpRequest({ srcMac: cmac(1), srcIp: cip(1), targetIp: cip(0) }))();
  t.deepEqual(check('container to container, switched', 0, buildUdp4({ srcMac: cmac(0), dstMac: cmac(1), srcIp: cip(0), dstIp: cip(1), payload: filler(8) })), { kind: 'ports', ports: [1] });
});

test('overlay network: ARP suppression, flooding to the tunnel, unicast into it and frames from peers decide alike in trace and forwarding', (t) => {
  const env = makeSwitch();
  const NET = 3;
  const TUNNEL = 5;
  const UPLINK = 6;
  const PEER = '192.168.56.12';
  env.sw.addUplink({ uplinkId: UPLINK, vtep: mustParseIpv4Addr('192.168.56.11'), fds: [200], dstPort: 4789 });
  env.sw.addNetwork(NET, 'ovl', { overlay: { vni: 4096, uplinkId: UPLINK, tunnelPortId: TUNNEL, peers: [PEER], mtu: 1450, learnArp: true } });
  for (const p of [0, 1]) env.sw.addPort({ portId: p, networkId: NET, fd: fdOf(p), name: `c${p}` });
  const remoteMac = '02:76:0a:00:01:03';
  t.true(env.sw.addRemote(NET, { mac: remoteMac, ip: ip(30), vtep: PEER }));
  const members = [0, 1, TUNNEL];
  const fromTap = (port: number, frame: Buffer) => () => {
    env.io.placeTap(0, frame);
    env.sw.receive(port, 1);
    return env.io.take();
  };
  const fromPeer = (frame: Buffer) => () => {
    env.io.placeUdp(0, frame, PEER);
    env.sw.receive(UPLINK, 1);
    return env.io.take();
  };
  const opts = { tunnelPort: TUNNEL };

  t.deepEqual(sameDecision(t, env, 'ARP for a remote address the table knows', 0, buildArpRequest({ srcMac: mac(2), srcIp: ip(2), targetIp: ip(30) }), members, fromTap(0, buildArpRequest({ srcMac: mac(2), srcIp: ip(2), targetIp: ip(30) })), opts), {
    kind: 'ports',
    ports: [0],
  });
  const unknown = buildArpRequest({ srcMac: mac(2), srcIp: ip(2), targetIp: ip(40) });
  t.deepEqual(sameDecision(t, env, 'ARP for an address nobody knows', 0, unknown, members, fromTap(0, unknown), opts), { kind: 'ports', ports: [1, TUNNEL] });
  const toRemote = buildUdp4({ srcMac: mac(2), dstMac: remoteMac, srcIp: ip(2), dstIp: ip(30), payload: filler(8) });
  // Its MAC is in the VTEP table, not yet in the MAC table: flooded, and the tunnel sends it to its VTEP alone.
  t.deepEqual(sameDecision(t, env, 'unicast to a remote endpoint not yet heard from', 0, toRemote, members, fromTap(0, toRemote), opts), { kind: 'ports', ports: [1, TUNNEL] });
  const fromRemote = buildUdp4({ srcMac: remoteMac, dstMac: mac(2), srcIp: ip(30), dstIp: ip(2), payload: filler(8) });
  t.deepEqual(sameDecision(t, env, 'a peer to a local container', TUNNEL, fromRemote, members, fromPeer(fromRemote), opts), { kind: 'ports', ports: [0] });
  t.deepEqual(sameDecision(t, env, 'unicast to a remote endpoint heard from', 0, toRemote, members, fromTap(0, toRemote), opts), { kind: 'ports', ports: [TUNNEL] });
  // Within the port's MTU, above the tunnel's, and without DF, so no ICMP answer comes back: the tunnel's refusal is the whole outcome.
  const tooBig = buildUdp4({ srcMac: mac(2), dstMac: remoteMac, srcIp: ip(2), dstIp: ip(30), dontFrag: false, payload: filler(1460) });
  t.deepEqual(sameDecision(t, env, 'a frame too big for the tunnel', 0, tooBig, members, fromTap(0, tooBig), opts), { kind: 'drop', reason: 'tunnelTooBig' });
  // From the tunnel an ARP request is never suppressed, even for an address the table knows: the peer's own table answered for it or did not.
  const peerAsks = buildArpRequest({ srcMac: remoteMac, srcIp: ip(30), targetIp: ip(30 + 1) });
  t.true(env.sw.addRemote(NET, { mac: '02:76:0a:00:01:04', ip: ip(31), vtep: PEER }));
  t.deepEqual(sameDecision(t, env, 'a peer asks for an address the table knows', TUNNEL, peerAsks, members, fromPeer(peerAsks), opts), { kind: 'ports', ports: [0, 1] });
});
