/**
 * A VM endpoint on an overlay network: a QEMU guest on host A's vsw
 * (vhost-user) and a namespace container on host B's, one VXLAN segment
 * between them over the test's underlay bridge. The guest's frames (TSO
 * super-frames included) leave A encapsulated, and B's come back into the
 * guest's receive buffers, exactly as a TAP endpoint's do.
 */
import test from 'ava';
import { mkdirSync } from 'node:fs';
import { qemuAvailable, startGuest, type Guest } from '../../scripts/vm/guest.js';
import type { OverlayNetworkState } from '../../src/service/api-types.js';
import { createEndpoint, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { addNetns, inNetns, ping, pollFor, runPrefix } from './helpers/env.js';
import { addUnderlay, startHostDaemon, type UnderlayHost } from './helpers/overlay.js';

const prefix = runPrefix();
const dir = `/tmp/${prefix}`;
const SUBNET = '10.12.0.0/24';
const VNI = 7302;
const GUEST_IP = '10.12.0.40';
const GUEST_MAC = '52:54:00:0c:00:28';

let hostA: UnderlayHost;
let hostB: UnderlayHost;
let daemonA: DaemonHandle | undefined;
let daemonB: DaemonHandle | undefined;
let b1: EndpointJson;
let guest: Guest | undefined;

test.before(async () => {
  const missing = await qemuAvailable();
  if (missing !== null) throw new Error(`QEMU guests cannot run here: ${missing}`);
  mkdirSync(dir, { recursive: true });
  [hostA, hostB] = await addUnderlay(prefix, 2);
  daemonA = await startHostDaemon(prefix, hostA);
  daemonB = await startHostDaemon(prefix, hostB);
  for (const [d, self, peer] of [
    [daemonA, hostA, hostB],
    [daemonB, hostB, hostA],
  ] as const) {
    await d.vswOk(['network', 'create', '-d', 'overlay', '--subnet', SUBNET, '--vni', String(VNI), '--vtep', self.ip, '--peer', peer.ip, 'blue']);
  }
  await addNetns(`${prefix}-b1`);
  b1 = await createEndpoint(daemonB, 'blue', `${prefix}-b1`);
});

test.after.always(async () => {
  const problems: string[] = [];
  await guest?.stop().catch((err: Error) => problems.push(`stopping the guest: ${err.message}`));
  try {
    await teardown(prefix, daemonA, daemonB);
  } catch (err) {
    problems.push((err as Error).message);
  }
  if (problems.length > 0) throw new Error(problems.join('; '));
});

test.serial("a guest on host A and a container on host B share an overlay segment: ping and TCP both ways through the tunnel", async (t) => {
  const sock = `${dir}/vm.sock`;
  await daemonA!.vswOk(['endpoint', 'create', '--network', 'blue', '--vhost-user', sock, '--ip', GUEST_IP, '--mac', GUEST_MAC, '--name', 'vm']);
  // The overlay's MTU is the guest's too, as it is a container's (the tunnel takes 50 bytes).
  guest = await startGuest({ name: `${prefix}-vm`, netdev: { kind: 'vhost-user', socket: sock, reconnectSeconds: 1 }, mac: GUEST_MAC, ip: `${GUEST_IP}/24`, mtu: 1450 });
  await pollFor('the VM endpoint to be up', 60_000, async () => ((await daemonA!.vswJson<EndpointJson>(['endpoint', 'inspect', 'vm'])).state === 'up' ? true : undefined));

  t.is((await guest.run(`ping -c 2 -W 3 ${b1.ip}`, { timeoutMs: 20_000 })).code, 0, 'the guest pings the container on the other host');
  t.true(await ping(b1.netns, GUEST_IP), 'the container pings the guest');

  // 3 MB each way: the guest's super-frames are segmented into the tunnel; B's reach the guest.
  t.is((await guest.run('mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1000 count=3000 2>/dev/null && httpd -p 8080 -h /tmp/www')).code, 0);
  const fromGuest = await inNetns(b1.netns, 'python3', ['-c', `import urllib.request; print(len(urllib.request.urlopen('http://${GUEST_IP}:8080/big', timeout=30).read()))`], { timeoutMs: 60_000 });
  t.is(fromGuest.stdout.trim(), '3000000', fromGuest.stderr);
  const server = await inNetns(b1.netns, 'sh', ['-c', `mkdir -p /tmp/${prefix}/www && dd if=/dev/zero of=/tmp/${prefix}/www/big bs=1000 count=3000 2>/dev/null && (cd /tmp/${prefix}/www && setsid python3 -m http.server 8081 >/dev/null 2>&1 &)`]);
  t.is(server.code, 0, server.stderr);
  const toGuest = await pollFor('the guest to fetch the file from B', 30_000, async () => {
    const r = await guest!.run(`wget -q -O - http://${b1.ip}:8081/big | wc -c`, { timeoutMs: 30_000 });
    return r.output.trim() === '3000000' ? r.output.trim() : undefined;
  });
  t.is(toGuest, '3000000');

  const [state] = await daemonA!.vswJson<OverlayNetworkState[]>(['overlay', 'ls', '--network', 'blue', '--json']);
  // The guest's 3 MB came as TSO super-frames (one frame in, many segments out of the tunnel); B's came back.
  const tunnel = state.counters.tunnel;
  t.true(tunnel.segmented > 0 && tunnel.segments > 2000, `A's tunnel cut the guest's super-frames: ${JSON.stringify(tunnel)}`);
  t.true(tunnel.framesOut > 100, `and carried B's frames back to it: ${JSON.stringify(tunnel)}`);
});
