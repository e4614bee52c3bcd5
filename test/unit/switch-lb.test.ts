/**
 * The load balancer stage on a switch: Maglev's shares and its 1/N moves,
 * the rewrite to a backend and back, connections kept across table changes
 * and drains, removal, hairpin, ARP for the VIP, no backend, and trace.
 */
import test from 'ava';
import { buildArpRequest, buildTcp4, buildUdp4, filler } from '../../src/packet/builders.js';
import { internetChecksum, pseudoSumV4 } from '../../src/packet/checksum.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { formatMac, macHi16, macLo32, mustParseMac } from '../../src/packet/ethernet.js';
import { formatIpv4Addr, mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { TcpFlags } from '../../src/packet/tcp.js';
import { ArpField } from '../../src/packet/arp.js';
import { buildMaglevTable } from '../../src/lb/maglev.js';
import type { BackendState, LbSpec } from '../../src/lb/balancer.js';
import type { Sent } from './helpers/recording-io.js';
import { frameOf, switchRig } from './helpers/switch-rig.js';

const VIP = '10.9.0.100';
const VIP_MAC = '02:76:0a:09:00:64';
const CLIENT = { mac: '02:76:0a:09:00:02', ip: '10.9.0.2' };
const BACKENDS = [3, 4, 5].map((n) => ({ port: n, mac: `02:76:0a:09:00:0${n}`, ip: `10.9.0.${n}` }));

const portOf = (s: Sent): number => s.fd - 100;
const ipAt = (f: Buffer, at: number): string => formatIpv4Addr(f.readUInt32BE(at));

function checksumsVerify(f: Buffer): boolean {
  const l4Len = f.readUInt16BE(16) - 20;
  return internetChecksum(f, 14, 20) === 0 && internetChecksum(f, 34, l4Len, pseudoSumV4(f.readUInt32BE(26), f.readUInt32BE(30), f[23], l4Len)) === 0;
}

function spec(states: BackendState[] = ['active', 'active', 'active'], which = BACKENDS, affinity: LbSpec['affinity'] = 'none'): LbSpec {
  const m = mustParseMac(VIP_MAC);
  return {
    id: 'lb1',
    name: 'web',
    vip: mustParseIpv4Addr(VIP),
    vipMacHi: macHi16(m, 0),
    vipMacLo: macLo32(m, 0),
    protocol: 'tcp',
    port: 80,
    affinity,
    backends: which.map((b, i) => {
      const mac = mustParseMac(b.mac);
      return { key: `${b.ip}:8080`, ip: mustParseIpv4Addr(b.ip), port: 8080, macHi: macHi16(mac, 0), macLo: macLo32(mac, 0), portId: b.port, state: states[i] ?? 'active' };
    }),
  };
}

function setup() {
  const rig = switchRig();
  rig.sw.addNetwork(1, 'net', {});
  rig.sw.addPort({ portId: 2, networkId: 1, fd: 102, name: 'client', ...CLIENT });
  for (const b of BACKENDS) rig.sw.addPort({ portId: b.port, networkId: 1, fd: 100 + b.port, name: `b${b.port}`, mac: b.mac, ip: b.ip });
  // The backends' MACs are learned the way a switch learns them.
  for (const b of BACKENDS) rig.send(b.port, buildUdp4({ srcMac: b.mac, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: b.ip, dstIp: '10.9.0.255', payload: filler(4) }));
  rig.send(2, buildUdp4({ srcMac: CLIENT.mac, dstMac: 'ff:ff:ff:ff:ff:ff', srcIp: CLIENT.ip, dstIp: '10.9.0.255', payload: filler(4) }));
  rig.sw.setBalancers(1, [spec()]);
  return rig;
}

const syn = (sport: number, src = CLIENT, flags: number = TcpFlags.SYN) =>
  buildTcp4({ srcMac: src.mac, dstMac: VIP_MAC, srcIp: src.ip, dstIp: VIP, srcPort: sport, dstPort: 80, flags, payload: filler(16) });

test('Maglev gives each backend about its share and moves about 1/N of the entries when one goes or comes', (t) => {
  const names = Array.from({ length: 5 }, (_, i) => `10.0.0.${i + 1}:80`);
  const table = buildMaglevTable(names);
  const shares = names.map((_, i) => table.filter((x) => x === i).length / table.length);
  for (const s of shares) t.true(s > 0.18 && s < 0.22, `share ${s.toFixed(3)} of 5 backends is about 1/5`);
  const without = buildMaglevTable(names.filter((_, i) => i !== 2));
  let moved = 0;
  for (let e = 0; e < table.length; e++) {
    const before = names[table[e]];
    const after = names.filter((_, i) => i !== 2)[without[e]];
    if (before !== after) moved++;
  }
  const fraction = moved / table.length;
  t.true(fraction >= 0.19 && fraction < 0.3, `removing one of 5 moved ${fraction.toFixed(3)} of the entries (its own fifth, and little more)`);
  const reversed = [...names].reverse();
  t.deepEqual(Array.from(buildMaglevTable(reversed), (x) => reversed[x]), Array.from(table, (x) => names[x]), 'the order the backends are listed in changes nothing');
  t.true(buildMaglevTable([]).every((x) => x === -1));
});

test('a connection to the VIP is rewritten to a backend with valid checksums, and the reply comes back from the VIP', (t) => {
  const { sw, send } = setup();
  const out = send(2, syn(40000));
  t.is(out.length, 1);
  const f = frameOf(out[0]);
  const backend = BACKENDS.find((b) => b.port === portOf(out[0]))!;
  t.truthy(backend, 'it leaves on a backend port');
  t.is(formatMac(f, 0), backend.mac, "to the backend's MAC");
  t.is(ipAt(f, 30), backend.ip, "and address");
  t.is(f.readUInt16BE(36), 8080, 'and port');
  t.is(ipAt(f, 26), CLIENT.ip, 'the client address stays: the backend sees who called');
  t.true(checksumsVerify(f));

  const reply = buildTcp4({ srcMac: backend.mac, dstMac: CLIENT.mac, srcIp: backend.ip, dstIp: CLIENT.ip, srcPort: 8080, dstPort: 40000, flags: TcpFlags.SYN | TcpFlags.ACK, payload: filler(8) });
  for (let i = 0; i < 2; i++) {
    const back = send(backend.port, reply);
    t.deepEqual(back.map(portOf), [2], `the reply reaches the client (flow cache ${i === 0 ? 'miss' : 'hit'})`);
    const r = frameOf(back[0]);
    t.is(ipAt(r, 26), VIP, 'from the VIP');
    t.is(r.readUInt16BE(34), 80, 'and its port');
    t.is(formatMac(r, 6), VIP_MAC, "and the VIP's MAC");
    t.true(checksumsVerify(r));
  }
  for (let i = 0; i < 3; i++) t.deepEqual(send(2, syn(40000, CLIENT, TcpFlags.ACK)).map(portOf), [backend.port], 'later frames of the connection go to the same backend');
  const counted = sw.lbState(1e7, 1)[0].balancers[0].backends.find((b) => b.key === `${backend.ip}:8080`)!;
  t.is(counted.bytes, 4 * syn(40000).length + 2 * reply.length, "the backend's bytes: both ways, cached frames included");
  t.is(counted.connections, 1);
});

test('new connections spread over the backends; established ones stay through a drain and a table change, and go elsewhere only when their backend is removed', (t) => {
  const { sw, send } = setup();
  const chosen = new Map<number, number>();
  for (let p = 41000; p < 41300; p++) chosen.set(p, portOf(send(2, syn(p))[0]));
  for (const b of BACKENDS) {
    const share = [...chosen.values()].filter((x) => x === b.port).length / chosen.size;
    t.true(share >= 0.25 && share <= 0.42, `backend ${b.ip} takes ${share.toFixed(2)} of 300 connections`);
  }
  sw.setBalancers(1, [spec(['active', 'draining', 'active'])]);
  for (const [p, port] of chosen) {
    const again = portOf(send(2, syn(p, CLIENT, TcpFlags.ACK))[0]);
    if (again !== port) {
      t.fail(`connection from port ${p} moved from ${port} to ${again} while its backend was only drained`);
      return;
    }
  }
  const fresh = Array.from({ length: 100 }, (_, i) => portOf(send(2, syn(42000 + i))[0]));
  t.false(fresh.includes(4), 'a draining backend takes no new connection');
  t.true(sw.lbState(1e7, 1)[0].balancers[0].backends[1].active > 0, 'its established connections are still counted active');

  sw.setBalancers(1, [spec(['active', 'active'], [BACKENDS[0], BACKENDS[2]])]);
  let moved = 0;
  for (const [p, port] of chosen) {
    const again = portOf(send(2, syn(p, CLIENT, TcpFlags.ACK))[0]);
    if (port === 4) t.not(again, 4, 'a removed backend gets nothing');
    else if (again !== port) moved++;
  }
  t.is(moved, 0, "the other backends' connections stay where they are");
});

test('a backend reaching its own VIP is balanced with the VIP as source, and its reply finds it back (hairpin)', (t) => {
  const { sw, send } = setup();
  const self = BACKENDS[1];
  sw.setBalancers(1, [spec(['active'], [self])]);
  const out = send(self.port, syn(43000, self));
  t.deepEqual(out.map(portOf), [self.port], 'the only backend is the caller itself');
  const f = frameOf(out[0]);
  t.is(ipAt(f, 26), VIP, 'its source is the VIP, not its own address');
  t.is(formatMac(f, 6), VIP_MAC);
  t.is(ipAt(f, 30), self.ip);
  t.true(checksumsVerify(f));
  const reply = buildTcp4({ srcMac: self.mac, dstMac: VIP_MAC, srcIp: self.ip, dstIp: VIP, srcPort: 8080, dstPort: 43000, flags: TcpFlags.SYN | TcpFlags.ACK, payload: filler(8) });
  const back = send(self.port, reply);
  t.deepEqual(back.map(portOf), [self.port]);
  const r = frameOf(back[0]);
  t.is(ipAt(r, 26), VIP, 'the reply comes from the VIP');
  t.is(r.readUInt16BE(34), 80);
  t.is(ipAt(r, 30), self.ip, 'to the caller');
  t.is(formatMac(r, 0), self.mac);
  t.true(checksumsVerify(r));
});

test('ARP for the VIP is answered with its MAC; a VIP with no backend up drops new connections and counts them', (t) => {
  const { sw, send, drops } = setup();
  const answer = send(2, buildArpRequest({ srcMac: CLIENT.mac, srcIp: CLIENT.ip, targetIp: VIP }));
  t.deepEqual(answer.map(portOf), [2]);
  t.is(formatMac(frameOf(answer[0]), 14 + ArpField.SHA), VIP_MAC);
  sw.setBalancers(1, [spec(['down', 'down', 'draining'])]);
  t.deepEqual(send(2, syn(44000)), []);
  t.is(drops(2, DropReason.lbNoBackend), 1);
  t.is(sw.lbState(1e7, 1)[0].balancers[0].noBackend, 1);
  sw.setBalancers(1, []);
  t.deepEqual(send(2, buildArpRequest({ srcMac: CLIENT.mac, srcIp: CLIENT.ip, targetIp: VIP })).map(portOf), [3, 4, 5], 'with the balancer gone, ARP for its address floods like any other');
});

test('client-ip affinity sends every connection of a client to one backend', (t) => {
  const { sw, send } = setup();
  sw.setBalancers(1, [spec(undefined, undefined, 'client-ip')]);
  const ports = new Set(Array.from({ length: 50 }, (_, i) => portOf(send(2, syn(45000 + i))[0])));
  t.is(ports.size, 1);
});

test('trace shows the balancing decision and takes nothing', (t) => {
  const { sw } = setup();
  const before = sw.lbState(1e7, 1)[0].balancers[0].backends.reduce((n, b) => n + b.connections, 0);
  const trace = sw.trace(2, 0, syn(46000));
  const step = trace.steps.find((s) => s.action === 'lb');
  t.truthy(step, JSON.stringify(trace.steps));
  t.regex(step!.detail ?? '', /web: 10\.9\.0\.100:80 balanced to 10\.9\.0\.[345]:8080 \(Maglev entry \d+\)/);
  const after = sw.lbState(1e7, 1)[0].balancers[0].backends.reduce((n, b) => n + b.connections, 0);
  t.is(after, before, 'a trace balances no connection');
});

test('a published VIP on a nat network: outside traffic to the published port is balanced, and the replies leave from the published port', (t) => {
  const rig = switchRig();
  const GW = { ip: '10.9.0.1', mac: '02:76:0a:09:00:01' };
  const EXT = { ip: '100.127.0.2', mac: '02:76:64:7f:00:02' };
  const HOST = { ip: '100.127.0.1', mac: '02:76:64:7f:00:01' };
  rig.sw.addNetwork(1, 'nat', { nat: { subnet: '10.9.0.0/24', gatewayIp: GW.ip, gatewayMac: GW.mac, externalIp: EXT.ip, externalMac: EXT.mac, hostMac: HOST.mac, portFirst: 1024, portLast: 65535 } });
  for (const b of BACKENDS) rig.sw.addPort({ portId: b.port, networkId: 1, fd: 100 + b.port, name: `b${b.port}`, mac: b.mac, ip: b.ip });
  rig.sw.addPort({ portId: 9, networkId: 1, fd: 109, name: 'host', external: true });
  rig.sw.setBalancers(1, [spec()]);
  rig.sw.setPublished(1, [{ protocol: 'tcp', externalPort: 8080, ip: VIP, port: 80 }]);
  const seen = new Set<number>();
  for (let p = 50000; p < 50030; p++) {
    const out = rig.send(9, buildTcp4({ srcMac: HOST.mac, dstMac: EXT.mac, srcIp: HOST.ip, dstIp: EXT.ip, srcPort: p, dstPort: 8080, payload: filler(8) }));
    t.is(out.length, 1);
    const f = frameOf(out[0]);
    const backend = BACKENDS.find((b) => b.port === portOf(out[0]))!;
    t.truthy(backend, 'it reaches a backend');
    t.is(ipAt(f, 30), backend.ip);
    t.is(f.readUInt16BE(36), 8080);
    t.is(formatMac(f, 0), backend.mac);
    t.true(checksumsVerify(f));
    seen.add(backend.port);
    const back = rig.send(backend.port, buildTcp4({ srcMac: backend.mac, dstMac: GW.mac, srcIp: backend.ip, dstIp: HOST.ip, srcPort: 8080, dstPort: p, flags: TcpFlags.SYN | TcpFlags.ACK, payload: filler(8) }));
    t.deepEqual(back.map(portOf), [9], 'the reply goes back to the host');
    const r = frameOf(back[0]);
    t.is(ipAt(r, 26), EXT.ip, 'from the external address');
    t.is(r.readUInt16BE(34), 8080, 'and the published port');
    t.is(formatMac(r, 0), HOST.mac);
    t.true(checksumsVerify(r));
  }
  t.is(seen.size, 3, 'every backend takes some');
});
