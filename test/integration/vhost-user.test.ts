/**
 * VM endpoints: QEMU guests (scripts/vm/guest.ts: Debian's kernel, a busybox
 * initramfs, KVM when it works and TCG otherwise) whose virtio-net NIC is a
 * vsw vhost-user port, against namespace containers on the same switch.
 *
 *   internal network I: container A (TAP in P-a) and guest G1 (P-vm1.sock)
 *   nat network N: guest G2 (P-vm2.sock) publishing its port 8080; an
 *                  "outside" namespace routed through the host
 *
 * The guests' frames go through vsw's native vhost-user device both ways:
 * pings, TCP in both directions (megabytes: the guest's TSO super-frames to
 * vsw, and vsw's to the guest's mergeable buffers), policy on the guest's
 * port, capture, NAT out and a published port in, and the two restarts: vsw's
 * (QEMU reconnects; the guest keeps running) and QEMU's (the endpoint waits
 * for the next VMM on its socket).
 */
import test from 'ava';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { spawn, type ChildProcess } from 'node:child_process';
import { qemuAvailable, startGuest, type Guest } from '../../scripts/vm/guest.js';
import type { Network } from '../../src/service/api-types.js';
import { CLI, createEndpoint, readLines, restartDaemon, startDaemon, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { addNetns, freeLoopbackPort, inNetns, ping, pollFor, runPrefix, sh } from './helpers/env.js';
import { addOutsideNamespace, finishNatTest, freeNet24, hostPortBase, PEER_HTTP_SERVER, prefixNumber, readIpForward, type Outside } from './helpers/nat.js';

const prefix = runPrefix();
const dir = `/tmp/${prefix}`;
const netI = `${prefix}-i`;
const netN = `${prefix}-n`;
const nsA = `${prefix}-a`;
const sock1 = `${dir}/vm1.sock`;
const sock2 = `${dir}/vm2.sock`;
const n = prefixNumber(prefix) % 200;
const subnetI = `10.${60 + (n % 40)}.${n}.0/24`;
const ipI = (host: number): string => subnetI.replace(/0\/24$/, String(host));
const G1_IP = ipI(10);
const G1_MAC = '52:54:00:76:00:0a';
const PUB = hostPortBase(prefix) + 7;

let d: DaemonHandle;
let metricsPort: number;
let forwardBefore: string | undefined;
let outside: Outside;
let a: EndpointJson;
let g1: Guest | undefined;
let g2: Guest | undefined;
const servers: ChildProcess[] = [];

const inspect = (name: string): Promise<EndpointJson> => d.vswJson<EndpointJson>(['endpoint', 'inspect', name]);

/** The endpoint once it is up (its guest's driver runs both queues). */
function endpointUp(name: string, timeoutMs = 60_000): Promise<EndpointJson> {
  return pollFor(`endpoint ${name} to be up`, timeoutMs, async () => {
    const e = await inspect(name);
    return e.state === 'up' ? e : undefined;
  });
}

async function guestPings(g: Guest, ip: string): Promise<boolean> {
  return (await g.run(`ping -c 2 -W 3 ${ip}`, { timeoutMs: 20_000 })).code === 0;
}

/** A python3 HTTP server in `ns` serving `bytes` zero bytes at /big; resolves once it listens. */
async function bigFileServer(ns: string, port: number, bytes: number): Promise<void> {
  const script = `
import http.server, sys
body = bytes(${bytes})
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
s = http.server.HTTPServer(('0.0.0.0', ${port}), H)
print('listening', flush=True)
s.serve_forever()
`;
  const child = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(child);
  await readLines(child).waitFor(/^listening$/, 1, 10_000);
}

test.before(async () => {
  const missing = await qemuAvailable();
  if (missing !== null) throw new Error(`QEMU guests cannot run here: ${missing}`);
  forwardBefore = readIpForward();
  mkdirSync(dir, { recursive: true });
  metricsPort = await freeLoopbackPort();
  d = await startDaemon(prefix, { extraArgs: ['--metrics', `127.0.0.1:${metricsPort}`] });
  await d.vswOk(['network', 'create', '-d', 'internal', '--subnet', subnetI, netI]);
  await addNetns(nsA);
  a = await createEndpoint(d, netI, nsA, ['--ip', ipI(20)]);
});

test.after.always(async () => {
  for (const s of servers) s.kill('SIGKILL');
  const problems: string[] = [];
  for (const g of [g1, g2]) await g?.stop().catch((err: Error) => problems.push(`stopping a guest: ${err.message}`));
  await finishNatTest(prefix, d, forwardBefore, problems);
});

test.serial('a VM endpoint waits for its VMM, then its guest pings and exchanges TCP with a container both ways', async (t) => {
  await d.vswOk(['endpoint', 'create', '--network', netI, '--vhost-user', sock1, '--ip', G1_IP, '--mac', G1_MAC, '--name', `${prefix}-g1`]);
  const waiting = await inspect(`${prefix}-g1`);
  t.is(waiting.state, 'down');
  t.is(waiting.stateReason, `waiting for its VMM to connect to ${sock1}`);
  t.is(waiting.vhost?.state, 'waiting');
  t.deepEqual(waiting.vhostUser, { socket: sock1, mode: 'server' });
  t.true(existsSync(sock1), 'vsw serves the socket');

  g1 = await startGuest({ name: `${prefix}-g1`, netdev: { kind: 'vhost-user', socket: sock1, reconnectSeconds: 1 }, mac: G1_MAC, ip: `${G1_IP}/24` });
  t.log(`guest booted under ${g1.accel} in ${g1.bootMs} ms`);
  const up = await endpointUp(`${prefix}-g1`);
  t.is(up.vhost?.state, 'running');
  t.true(up.vhost?.memorySealed, "QEMU's memfd guest memory cannot shrink under vsw");
  // Negotiated: checksum and TSO both ways, mergeable receive buffers, event index, virtio 1.0.
  const features = BigInt(up.vhost!.features!);
  for (const bit of [0n, 1n, 7n, 11n, 15n, 29n, 32n]) t.true((features & (1n << bit)) !== 0n, `feature bit ${bit} negotiated (${up.vhost!.features})`);

  t.true(await guestPings(g1, a.ip), 'the guest pings the container');
  t.true(await ping(nsA, G1_IP), 'the container pings the guest');

  // Guest -> container: 4 MB over TCP (the container's answer reaches the guest as super-frames into mergeable buffers).
  await bigFileServer(nsA, 8000, 4_000_000);
  const fetched = await g1.run(`wget -q -O - http://${a.ip}:8000/big | wc -c`, { timeoutMs: 60_000 });
  t.is(fetched.code, 0, fetched.output);
  t.is(fetched.output.trim(), '4000000', 'the guest received the whole file');

  // Container -> guest: the guest serves 4 MB (its TSO super-frames cross vsw to the container's TAP).
  t.is((await g1.run('mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1000 count=4000 2>/dev/null && httpd -p 8080 -h /tmp/www')).code, 0);
  const got = await inNetns(nsA, 'python3', ['-c', `import urllib.request; print(len(urllib.request.urlopen('http://${G1_IP}:8080/big', timeout=30).read()))`], { timeoutMs: 60_000 });
  t.is(got.code, 0, got.stderr);
  t.is(got.stdout.trim(), '4000000', 'the container received the whole file from the guest');

  const stats = await d.vswJson<{ ports: { endpoint: string; rxFrames: number; txFrames: number; rxBytes: number; txBytes: number; drops: Record<string, number> }[] }>(['stats', '--json']);
  const port = stats.ports.find((p) => p.endpoint === up.id)!;
  t.true(port.rxBytes > 4_000_000 && port.txBytes > 4_000_000, `the guest's port counted both files: ${JSON.stringify(port)}`);
  t.is(port.drops.txFailed ?? 0, 0, 'nothing for the running guest was refused');

  // Prometheus: the guest's port as any endpoint's, and its device's own metrics.
  const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const labels = `port="${prefix}-g1",network="${netI}"`;
  const rxBytes = new RegExp(`^vsw_port_rx_bytes_total\\{port="${prefix}-g1",kind="endpoint",network="${netI}"\\} (\\d+)`, 'm').exec(metrics);
  t.true(rxBytes !== null && Number(rxBytes[1]) > 4_000_000, 'vsw_port_rx_bytes_total counts what the guest sent');
  t.true(metrics.includes(`vsw_vhost_connected{${labels}} 1`), 'vsw_vhost_connected');
  t.true(metrics.includes(`vsw_vhost_broken_total{${labels}} 0`), 'vsw_vhost_broken_total');
  t.true(metrics.includes(`vsw_port_up{port="${prefix}-g1",kind="endpoint",network="${netI}"} 1`), 'vsw_port_up');
});

test.serial("policy on the guest's port applies, and vsw capture records its frames", async (t) => {
  const g = `${prefix}-g1`;
  await d.vswOk(['policy', 'acl', 'add', g, '--action', 'block', '--direction', 'in', '--protocol', 'icmp', '--priority', '100', '--id', 'no-ping']);
  t.false(await ping(nsA, G1_IP), 'the block rule drops pings to the guest');
  t.true((await g1!.run(`wget -q -O - http://${a.ip}:8000/big | wc -c`, { timeoutMs: 60_000 })).output.trim() === '4000000', 'TCP still passes');
  await d.vswOk(['policy', 'acl', 'rm', g, 'no-ping']);
  t.true(await ping(nsA, G1_IP), 'pings pass again once the rule is gone');

  const file = `${dir}/g1.pcap`;
  const cap = spawn('node', [CLI, '--socket', d.socket, 'capture', g, '--point', 'ingress', '-c', '4', '-w', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => cap.on('exit', resolve));
  let done = false;
  void exited.then(() => (done = true));
  // The guest pings until the capture has its 4 frames: no guess at when the capture started.
  await pollFor('the capture to record 4 frames', 30_000, async () => {
    if (done) return true;
    await g1!.run(`ping -c 1 -W 1 ${a.ip}`);
    return undefined;
  });
  t.is(await exited, 0, 'the capture ended after 4 frames');
  const read = await sh('tshark', ['-r', file, '-T', 'fields', '-e', 'eth.src']);
  t.is(read.code, 0, read.stderr);
  const sources = read.stdout.trim().split('\n');
  t.is(sources.length, 4);
  t.true(sources.every((mac) => mac === G1_MAC), `every captured ingress frame came from the guest: ${sources.join(', ')}`);
});

test.serial('vsw restarts under a running guest: QEMU reconnects and the guest keeps its boot', async (t) => {
  const g = g1!;
  const bootId = (await g.run('cat /proc/sys/kernel/random/boot_id')).output.trim();
  const before = await inspect(`${prefix}-g1`);
  t.is(await d.stop('SIGTERM'), 0);
  t.false(existsSync(sock1), 'the stopped daemon took its socket with it');
  d = await restartDaemon(d);
  const after = await endpointUp(`${prefix}-g1`, 30_000);
  t.is(after.id, before.id, 'the same endpoint, restored');
  t.is(after.vhost?.connections, 1, 'the new daemon saw one connection: QEMU reconnected on its own');
  t.true(await guestPings(g, a.ip), 'the guest reaches the container again');
  t.true(await ping(nsA, G1_IP));
  t.is((await g.run('cat /proc/sys/kernel/random/boot_id')).output.trim(), bootId, 'the guest did not reboot');
});

test.serial('QEMU restarts: the endpoint waits for the next VMM on its socket and takes it without any vsw command', async (t) => {
  await g1!.stop();
  g1 = undefined;
  const waiting = await pollFor('the endpoint to wait for its VMM again', 10_000, async () => {
    const e = await inspect(`${prefix}-g1`);
    return e.vhost?.state === 'waiting' ? e : undefined;
  });
  t.is(waiting.state, 'down');
  t.true(existsSync(sock1), 'the socket is still served');
  g1 = await startGuest({ name: `${prefix}-g1b`, netdev: { kind: 'vhost-user', socket: sock1, reconnectSeconds: 1 }, mac: G1_MAC, ip: `${G1_IP}/24` });
  const up = await endpointUp(`${prefix}-g1`);
  t.is(up.vhost?.connections, 2);
  t.true(await guestPings(g1, a.ip));
});

test.serial('the guest resets its NIC (driver unbound and bound again): vsw stops the queues and runs the new ones', async (t) => {
  const g = g1!;
  const before = await inspect(`${prefix}-g1`);
  t.is((await g.run('echo virtio0 > /sys/bus/virtio/drivers/virtio_net/unbind')).code, 0);
  await pollFor('the endpoint to see the queues stopped', 10_000, async () => ((await inspect(`${prefix}-g1`)).vhost?.state === 'connected' ? true : undefined));
  t.is((await inspect(`${prefix}-g1`)).stateReason, "its VMM is connected; the guest's virtio-net driver has not started its queues yet");
  t.is((await g.run(`echo virtio0 > /sys/bus/virtio/drivers/virtio_net/bind && ip link set eth0 up && ip addr add ${G1_IP}/24 dev eth0`)).code, 0);
  const up = await endpointUp(`${prefix}-g1`);
  t.is(up.vhost?.connections, before.vhost?.connections, 'the same connection: only the queues started again');
  t.true(await guestPings(g, a.ip), 'frames move on the new queues');
});

test.serial('a guest whose NIC declines TSO and checksum offload gets super-frames cut into segments with complete checksums', async (t) => {
  const sock5 = `${dir}/vm5.sock`;
  await d.vswOk(['endpoint', 'create', '--network', netI, '--vhost-user', sock5, '--ip', ipI(15), '--mac', '52:54:00:76:00:0f', '--name', `${prefix}-g5`]);
  const g5 = await startGuest({
    name: `${prefix}-g5`,
    netdev: { kind: 'vhost-user', socket: sock5, reconnectSeconds: 1 },
    mac: '52:54:00:76:00:0f',
    ip: `${ipI(15)}/24`,
    deviceOptions: 'guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_csum=off',
  });
  try {
    const up = await endpointUp(`${prefix}-g5`);
    const features = BigInt(up.vhost!.features!);
    for (const bit of [1n, 7n, 8n]) t.is(features & (1n << bit), 0n, `feature bit ${bit} declined (${up.vhost!.features})`);
    // The container's TAP hands vsw 64 KB super-frames with partial checksums; the guest takes only whole, checked segments.
    const fetched = await g5.run(`wget -q -O - http://${a.ip}:8000/big | wc -c`, { timeoutMs: 60_000 });
    t.is(fetched.output.trim(), '4000000', fetched.output);
    // A segment with a wrong checksum would be dropped by the guest's stack and the transfer would stall.
    t.is((await inspect(`${prefix}-g5`)).vhost?.rxUnfit, 0, 'every super-frame was cut');
  } finally {
    await g5.stop();
  }
  await d.vswOk(['endpoint', 'rm', `${prefix}-g5`]);
});

test.serial('client mode: QEMU serves the socket and vsw connects to it', async (t) => {
  const sock3 = `${dir}/vm3.sock`;
  const booting = startGuest({ name: `${prefix}-g3`, netdev: { kind: 'vhost-user', socket: sock3, server: true }, mac: '52:54:00:76:00:0c', ip: `${ipI(12)}/24` });
  // QEMU listens before it boots the guest, and waits there for vsw.
  await pollFor('QEMU to serve its socket', 15_000, async () => (existsSync(sock3) ? true : undefined));
  await d.vswOk(['endpoint', 'create', '--network', netI, '--vhost-user', sock3, '--vhost-mode', 'client', '--ip', ipI(12), '--mac', '52:54:00:76:00:0c', '--name', `${prefix}-g3`]);
  const g3 = await booting;
  try {
    const up = await endpointUp(`${prefix}-g3`);
    t.deepEqual(up.vhostUser, { socket: sock3, mode: 'client' });
    t.true(await guestPings(g3, a.ip));
  } finally {
    await g3.stop();
  }
  await pollFor('the endpoint to wait for QEMU again', 10_000, async () => ((await inspect(`${prefix}-g3`)).vhost?.state === 'waiting' ? true : undefined));
  t.is((await inspect(`${prefix}-g3`)).stateReason, `waiting for its VMM to serve ${sock3}`);
  await d.vswOk(['endpoint', 'rm', `${prefix}-g3`]);
});

test.serial('a guest on a nat network reaches the outside through the NAT and serves a published port', async (t) => {
  outside = await addOutsideNamespace(`${prefix}-out`, `${prefix}-ov`, await freeNet24('198.18', (prefixNumber(prefix) % 254) + 1));
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.19.0.0/24', netN]);
  const net = await d.vswJson<Network>(['network', 'inspect', netN]);
  const ext = net.nat!.externalIp;
  await d.vswOk(['endpoint', 'create', '--network', netN, '--vhost-user', sock2, '--ip', '172.19.0.10', '--mac', '52:54:00:76:00:0b', '--name', `${prefix}-g2`, '-p', `${PUB}:8080`]);
  g2 = await startGuest({ name: `${prefix}-g2`, netdev: { kind: 'vhost-user', socket: sock2, reconnectSeconds: 1 }, mac: '52:54:00:76:00:0b', ip: '172.19.0.10/24', gateway: '172.19.0.1' });
  await endpointUp(`${prefix}-g2`);

  // Out: the outside's server sees the network's external address, not the guest's.
  const peer = spawn('ip', ['netns', 'exec', outside.ns, 'python3', '-c', PEER_HTTP_SERVER, '8090'], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(peer);
  await readLines(peer).waitFor(/^listening$/, 1, 10_000);
  const seen = await g2.run(`wget -q -O - http://${outside.ip}:8090/`, { timeoutMs: 30_000 });
  t.is(seen.code, 0, seen.output);
  t.true(seen.output.includes(ext), `the outside saw ${seen.output.trim()}, the nat network's external address ${ext}`);
  t.false(seen.output.includes('172.19.0.10'));

  // In: the published port reaches the guest's server from the outside.
  t.is((await g2.run('mkdir -p /tmp/www && echo served-by-the-guest > /tmp/www/index.html && httpd -p 8080 -h /tmp/www')).code, 0);
  const r = await pollFor('the published port to answer', 20_000, async () => {
    const got = await inNetns(outside.ns, 'python3', ['-c', `import urllib.request; print(urllib.request.urlopen('http://${outside.hostIp}:${PUB}/', timeout=3).read().decode())`]);
    return got.code === 0 ? got.stdout : undefined;
  });
  t.is(r.trim(), 'served-by-the-guest');
});

test.serial("a VM endpoint whose socket's directory is gone at a restart is down with the reason, and served once it is back", async (t) => {
  const sub = `${dir}/run-after-reboot`;
  mkdirSync(sub);
  const sock = `${sub}/vm4.sock`;
  await d.vswOk(['endpoint', 'create', '--network', netI, '--vhost-user', sock, '--ip', ipI(14), '--name', `${prefix}-g4`]);
  t.is(await d.stop('SIGTERM'), 0);
  rmSync(sub, { recursive: true });
  d = await restartDaemon(d);
  const down = await inspect(`${prefix}-g4`);
  t.is(down.stateReason, `directory ${sub} of socket ${sock} does not exist: create it (mkdir -p ${sub}); vsw tries again every second`);
  t.is((await inspect(`${prefix}-g1`)).vhostUser?.socket, sock1, 'the other VM endpoints came back');
  mkdirSync(sub);
  const served = await pollFor('the endpoint to serve its socket again', 10_000, async () => {
    const e = await inspect(`${prefix}-g4`);
    return e.vhost?.state === 'waiting' && e.stateReason === `waiting for its VMM to connect to ${sock}` ? e : undefined;
  });
  t.is(served.state, 'down');
  t.true(existsSync(sock));
  await d.vswOk(['endpoint', 'rm', `${prefix}-g4`]);
  t.false(existsSync(sock));
});
