/**
 * The QEMU guest of scripts/vm/guest.ts on a kernel TAP: the baseline
 * topology of the vhost-user benchmark, and the check that the guest tooling
 * (initramfs, accelerator, serial shell, stop) works before vsw is put in
 * the guest's path.
 *
 *   P-br: bridge br0 with the guest's TAP (QEMU runs in this namespace) and
 *         one end of a veth
 *   P-peer: the veth's other end, eth0 10.1.0.1/24
 *   guest: eth0 10.1.0.5/24, default route via 10.1.0.1
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { qemuAvailable, startGuest, type Guest } from '../../scripts/vm/guest.js';
import { addNetns, inNetns, linksWithPrefix, namespacesWithPrefix, ping, processesMentioning, removeEverything, runPrefix, sh } from './helpers/env.js';

const prefix = runPrefix();
const nsBr = `${prefix}-br`;
const nsPeer = `${prefix}-peer`;
const TAP = `${prefix}t`;
const PEER_IP = '10.1.0.1';
const GUEST_IP = '10.1.0.5';
let guest: Guest | undefined;

async function ip(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

test.before(async () => {
  const missing = await qemuAvailable();
  if (missing !== null) throw new Error(`QEMU guests cannot run here: ${missing}`);
  await addNetns(nsBr);
  await addNetns(nsPeer);
  await ip(['-n', nsBr, 'link', 'add', 'br0', 'type', 'bridge']);
  await ip(['-n', nsBr, 'link', 'set', 'br0', 'up']);
  // Persistent, in the bridge and up before QEMU attaches to it: no race with the guest's first packets.
  await ip(['-n', nsBr, 'tuntap', 'add', 'dev', TAP, 'mode', 'tap']);
  await ip(['-n', nsBr, 'link', 'set', TAP, 'master', 'br0', 'up']);
  await ip(['-n', nsBr, 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nsPeer]);
  await ip(['-n', nsBr, 'link', 'set', 'v0', 'master', 'br0', 'up']);
  await ip(['-n', nsPeer, 'addr', 'add', `${PEER_IP}/24`, 'dev', 'eth0']);
  await ip(['-n', nsPeer, 'link', 'set', 'eth0', 'up']);
  await ip(['-n', nsPeer, 'link', 'set', 'lo', 'up']);
});

test.after.always(async () => {
  await guest?.stop();
  await removeEverything(prefix);
});

test.serial('a guest boots on a TAP and configures eth0 from the kernel command line', async (t) => {
  guest = await startGuest({
    name: `${prefix}-vm`,
    netdev: { kind: 'tap', ifname: TAP, netns: nsBr },
    mac: '52:54:00:5e:00:05',
    ip: `${GUEST_IP}/24`,
    gateway: PEER_IP,
  });
  t.log(`booted under ${guest.accel} in ${guest.bootMs} ms`);
  t.true(processesMentioning(`${prefix}-vm`).length > 0, 'QEMU carries the guest name');
  const addr = await guest.run('ip -o -4 addr show dev eth0');
  t.is(addr.code, 0, addr.output);
  t.regex(addr.output, new RegExp(`inet ${GUEST_IP.replace(/\./g, '\\.')}/24`));
  const route = await guest.run('ip route show default');
  t.regex(route.output, new RegExp(`default via ${PEER_IP.replace(/\./g, '\\.')} dev eth0`));
  t.regex((await guest.run('cat /sys/class/net/eth0/address')).output, /^52:54:00:5e:00:05\n$/);
});

test.serial('run returns each command its own status and output', async (t) => {
  const g = guest!;
  t.deepEqual(await g.run('echo one; echo two >&2'), { code: 0, output: 'one\ntwo\n' });
  t.deepEqual(await g.run('false'), { code: 1, output: '' });
  t.deepEqual(await g.run('exit_code() { return 7; }\nexit_code'), { code: 7, output: '' });
  // Two at once are queued, not interleaved.
  const [a, b] = await Promise.all([g.run('sleep 0.3; echo a'), g.run('echo b')]);
  t.is(a.output, 'a\n');
  t.is(b.output, 'b\n');
  await t.throwsAsync(g.run('sleep 60', { timeoutMs: 1_500 }), { message: /Timed out after 1500 ms waiting for `sleep 60`/ });
  t.deepEqual(await g.run('echo after the timeout'), { code: 0, output: 'after the timeout\n' }, 'the ^C gave the shell back');
});

test.serial('the guest and a namespace reach each other across the Linux bridge', async (t) => {
  const g = guest!;
  const out = await g.run(`ping -c 3 -W 2 ${PEER_IP}`, { timeoutMs: 20_000 });
  t.is(out.code, 0, out.output);
  t.true(await ping(nsPeer, GUEST_IP, 3), `${nsPeer} pings the guest`);
});

test.serial('iperf3 runs in the guest, as client and as background server', async (t) => {
  const g = guest!;
  const server = await inNetns(nsPeer, 'iperf3', ['-s', '-1', '-D', '-B', PEER_IP]);
  t.is(server.code, 0, server.stderr);
  await sleep(300);
  const client = await g.run(`iperf3 -c ${PEER_IP} -t 2 -J`, { timeoutMs: 30_000 });
  t.is(client.code, 0, client.output.slice(0, 500));
  const up = (JSON.parse(client.output) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
  t.true(up > 0);

  const bg = await g.spawnBackground(`iperf3 -s -1 -B ${GUEST_IP}`);
  t.true(bg.pid > 1);
  await sleep(500);
  const down = await inNetns(nsPeer, 'iperf3', ['-c', GUEST_IP, '-t', '2', '-J'], { timeoutMs: 30_000 });
  t.is(down.code, 0, down.stderr || down.stdout.slice(0, 500));
  const bps = (JSON.parse(down.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
  t.true(bps > 0);
  t.log(`guest -> namespace ${(up / 1e9).toFixed(2)} Gbit/s, namespace -> guest ${(bps / 1e9).toFixed(2)} Gbit/s (${g.accel}, not a benchmark)`);
  t.regex((await g.run(`cat ${bg.log}`)).output, /receiver/, 'the background server wrote its report to its log');
});

test.serial('a guest that cannot start says why and leaves no QEMU', async (t) => {
  const name = `${prefix}-bad`;
  const err = await t.throwsAsync(startGuest({ name, netdev: { kind: 'tap', ifname: TAP, netns: `${prefix}-missing` }, mac: '52:54:00:5e:00:06' }));
  t.regex(err!.message, new RegExp(`QEMU exited while waiting for the guest to boot \\(log /tmp/vsw-vm/${name}\\.log\\)`));
  t.regex(err!.message, /Cannot open network namespace/, 'the tail of the log says why');
  t.deepEqual(processesMentioning(name), []);
  await t.throwsAsync(startGuest({ name: 'vm1', netdev: { kind: 'tap', ifname: TAP, netns: nsBr }, mac: '52:54:00:5e:00:06' }), { message: /must start with vswt/ });
});

test.serial('stop ends QEMU, twice is fine, and nothing of the run is left', async (t) => {
  const g = guest!;
  await g.stop();
  await g.stop();
  t.deepEqual(processesMentioning(`${prefix}-vm`), []);
  await t.throwsAsync(g.run('true', { timeoutMs: 1_000 }), { message: /QEMU exited/ });
  await removeEverything(prefix);
  t.deepEqual(await namespacesWithPrefix(prefix), []);
  t.deepEqual(await linksWithPrefix(prefix), []);
  t.deepEqual(processesMentioning(prefix), []);
});
