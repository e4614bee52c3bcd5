/**
 * Spoof guard on a real daemon: frames crafted with the packet builders and
 * written into an endpoint's TAP from inside its namespace (python AF_PACKET,
 * injectFrames), watched from the peer's namespace with tcpdump and a python
 * UDP listener. Subnet 10.72.0.0/24 (network s).
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { buildArpReply, buildUdp4 } from '../../src/packet/builders.js';
import type { EndpointPolicy } from '../../src/service/api-types.js';
import { injectFrames, ping, runPrefix, spawnInNetns } from './helpers/env.js';
import {
  api,
  capture,
  createNetworkWithEndpoints,
  type DaemonHandle,
  type EndpointJson,
  type LineReader,
  portStats,
  readLines,
  startDaemon,
  teardown,
  waitNeighboursSettled,
} from './helpers/daemon.js';

const prefix = runPrefix();
const netS = `${prefix}-s`;
const nsS = [`${prefix}-s1`, `${prefix}-s2`];
/** In the subnet, held by nobody. */
const FOREIGN_IP = '10.72.0.200';
const FOREIGN_MAC = '02:5a:5a:00:00:c8';
const UDP_PORT = 9999;

let d: DaemonHandle;
const ep: EndpointJson[] = [];

test.before(async () => {
  d = await startDaemon(prefix);
  ep.push(...(await createNetworkWithEndpoints(d, netS, '10.72.0.0/24', nsS)));
});

test.after.always(async () => {
  await teardown(prefix, d);
});

const UDP_LISTENER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    data, src = s.recvfrom(65535)
    print("%s %s" % (src[0], data.decode(errors="replace")), flush=True)
`;

/** A UDP listener in `ns` that prints "SRCIP PAYLOAD" per datagram. */
async function udpListener(t: ExecutionContext, ns: string): Promise<LineReader> {
  const child = spawnInNetns(ns, 'python3', ['-c', UDP_LISTENER, String(UDP_PORT)]);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const lines = readLines(child);
  await lines.waitFor(/^listening$/);
  return lines;
}

function udp(srcMac: string, srcIp: string, srcPort: number, payload: string): string {
  const [, b] = ep;
  return buildUdp4({ srcMac, dstMac: b.mac, srcIp, dstIp: b.ip, srcPort, dstPort: UDP_PORT, payload: Buffer.from(payload) }).toString('hex');
}

async function spoofDrops(endpoint: string): Promise<{ spoofMac: number; spoofIp: number; spoofArp: number }> {
  const p = (await portStats(d)).get(endpoint);
  if (!p) throw new Error(`no port for ${endpoint} in vsw stats`);
  return { spoofMac: p.drops.spoofMac ?? 0, spoofIp: p.drops.spoofIp ?? 0, spoofArp: p.drops.spoofArp ?? 0 };
}

async function policyOf(endpoint: string): Promise<EndpointPolicy> {
  const r = await api<EndpointPolicy>(d, 'GET', `/v1/endpoints/${endpoint}/policy`);
  if (r.status !== 200) throw new Error(`GET policy of ${endpoint}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

test.serial('spoofed MAC, IP and ARP from an endpoint are dropped and counted; the genuine frame arrives', async (t) => {
  const [a, b] = ep;
  t.true(await ping(nsS[0], b.ip), 'a -> b');
  t.true(await ping(nsS[1], a.ip), 'b -> a');
  await waitNeighboursSettled(nsS);
  t.true((await policyOf(a.id)).spoofGuard.enabled, 'spoof guard is on by default');

  const listener = await udpListener(t, nsS[1]);
  const cap = await capture(nsS[1], 'eth0', ['udp', 'or', 'arp'], `/tmp/${prefix}/spoof-b.pcap`);
  const before = await spoofDrops(a.id);
  const frames = [
    udp(FOREIGN_MAC, a.ip, 40002, 'spoof-mac'),
    udp(a.mac, FOREIGN_IP, 40003, 'spoof-ip'),
    // "b's address is at a's MAC": the classic poisoning of b's neighbours.
    buildArpReply({ srcMac: a.mac, srcIp: b.ip, dstMac: b.mac, dstIp: b.ip }).toString('hex'),
    // Positive control, sent last: the same path with a's own MAC and address.
    udp(a.mac, a.ip, 40001, 'genuine'),
  ];
  t.deepEqual(await injectFrames(nsS[0], a.ifname, frames), { sent: frames.length, refused: 0 });
  await listener.waitFor(/ genuine$/, 1, 5_000);
  await sleep(300);
  const seen = await cap.stop();
  const after = await spoofDrops(a.id);

  t.deepEqual(listener.lines.slice(1), [`${a.ip} genuine`], 'the listener in b got only the genuine datagram');
  const udpSeen = seen.filter((l) => l.includes(`.${UDP_PORT}:`));
  t.is(udpSeen.length, 1, `tcpdump in b saw UDP: ${udpSeen.join(' | ')}; everything: ${seen.join(' | ')}`);
  t.true(udpSeen[0]?.includes(`${a.ip}.40001 > ${b.ip}.${UDP_PORT}`), udpSeen[0]);
  t.false(seen.some((l) => l.includes(FOREIGN_IP)), `tcpdump in b saw ${FOREIGN_IP}: ${seen.join(' | ')}`);
  t.false(
    seen.some((l) => /ARP, Reply/.test(l) && l.includes(`${b.ip} is-at`)),
    `tcpdump in b saw the forged ARP reply: ${seen.join(' | ')}`,
  );
  t.deepEqual(
    { spoofMac: after.spoofMac - before.spoofMac, spoofIp: after.spoofIp - before.spoofIp, spoofArp: after.spoofArp - before.spoofArp },
    { spoofMac: 1, spoofIp: 1, spoofArp: 1 },
    'drops counted at a',
  );
  const bDrops = await spoofDrops(b.id);
  t.deepEqual(bDrops, { spoofMac: 0, spoofIp: 0, spoofArp: 0 }, 'nothing counted at b');
  t.true(await ping(nsS[0], b.ip), 'a still reaches b');
});

test.serial('with spoof guard off a foreign source address gets through; allowedIps admits it with the guard on', async (t) => {
  const [a] = ep;
  t.teardown(async () => {
    await api(d, 'PUT', `/v1/endpoints/${a.id}/spoof-guard`, { enabled: true });
  });
  const listener = await udpListener(t, nsS[1]);
  const received = (payload: string): boolean => listener.lines.includes(`${FOREIGN_IP} ${payload}`);
  const control = async (payload: string): Promise<void> => {
    await injectFrames(nsS[0], a.ifname, [udp(a.mac, a.ip, 40001, payload)]);
    await listener.waitFor(new RegExp(` ${payload}$`), 1, 5_000);
  };

  const off = await d.vsw(['policy', 'spoof-guard', a.id, 'off']);
  t.is(off.code, 0, off.stderr);
  t.false((await policyOf(a.id)).spoofGuard.enabled, 'GET policy after `spoof-guard off`');
  const before = await spoofDrops(a.id);
  await injectFrames(nsS[0], a.ifname, [udp(a.mac, FOREIGN_IP, 40010, 'while-off')]);
  await listener.waitFor(new RegExp(`^${FOREIGN_IP.replace(/\./g, '\\.')} while-off$`), 1, 5_000);
  t.true(received('while-off'));
  t.deepEqual(await spoofDrops(a.id), before, 'nothing counted with the guard off');

  const on = await d.vsw(['policy', 'spoof-guard', a.id, 'on']);
  t.is(on.code, 0, on.stderr);
  t.true((await policyOf(a.id)).spoofGuard.enabled, 'GET policy after `spoof-guard on`');
  await injectFrames(nsS[0], a.ifname, [udp(a.mac, FOREIGN_IP, 40011, 'while-on')]);
  await control('control-on');
  await sleep(200);
  t.false(received('while-on'), 'the foreign source got through with the guard back on');
  t.is((await spoofDrops(a.id)).spoofIp, before.spoofIp + 1);

  const allow = await api(d, 'PUT', `/v1/endpoints/${a.id}/spoof-guard`, { enabled: true, allowedIps: [FOREIGN_IP] });
  t.true(allow.status >= 200 && allow.status < 300, `PUT spoof-guard allowedIps: HTTP ${allow.status} ${JSON.stringify(allow.body)}`);
  const guard = (await policyOf(a.id)).spoofGuard;
  t.true(guard.enabled);
  t.deepEqual(guard.allowedIps, [FOREIGN_IP]);
  await injectFrames(nsS[0], a.ifname, [udp(a.mac, FOREIGN_IP, 40012, 'allowed-ip')]);
  await listener.waitFor(/ allowed-ip$/, 1, 5_000);
  t.true(received('allowed-ip'));
  // allowedIps widens the addresses, not the MACs.
  await injectFrames(nsS[0], a.ifname, [udp(FOREIGN_MAC, FOREIGN_IP, 40013, 'allowed-ip-foreign-mac')]);
  await control('control-allowed');
  await sleep(200);
  t.false(received('allowed-ip-foreign-mac'), 'a foreign MAC got through because its address is allowed');
  t.true(await ping(nsS[1], a.ip), 'b still reaches a');
});
