/**
 * A physical LAN for the tests of networks on an uplink: a namespace holding
 * a Linux bridge, hosts plugged into it by veth, the vsw host's uplink among
 * them. All names come from the test (its vswt prefix).
 */
import { sh } from './env.js';

async function ip(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

/** The namespace `lan` (already made) gets bridge br0, up; with `outside`, a host on it: that namespace's eth0 at `ip`/24. */
export async function buildLan(lan: string, outside?: { netns: string; ip: string }): Promise<void> {
  await ip(['-n', lan, 'link', 'add', 'br0', 'type', 'bridge']);
  await ip(['-n', lan, 'link', 'set', 'br0', 'up']);
  if (outside === undefined) return;
  await plugIntoLan(lan, 'out', { name: 'eth0', netns: outside.netns });
  await ip(['-n', outside.netns, 'addr', 'add', `${outside.ip}/24`, 'dev', 'eth0']);
}

/**
 * A veth whose end `end.name` is in `end.netns` (the test's own namespace when
 * absent) and whose other end `lanEnd` is a port of the LAN's bridge; both up,
 * both at `end.mtu` when given.
 */
export async function plugIntoLan(lan: string, lanEnd: string, end: { name: string; netns?: string; mtu?: number }): Promise<void> {
  const at = end.netns === undefined ? [] : ['-n', end.netns];
  await ip([...at, 'link', 'add', end.name, 'type', 'veth', 'peer', 'name', lanEnd, 'netns', lan]);
  if (end.mtu !== undefined) {
    await ip([...at, 'link', 'set', end.name, 'mtu', String(end.mtu)]);
    await ip(['-n', lan, 'link', 'set', lanEnd, 'mtu', String(end.mtu)]);
  }
  await ip(['-n', lan, 'link', 'set', lanEnd, 'master', 'br0']);
  await ip(['-n', lan, 'link', 'set', lanEnd, 'up']);
  await ip([...at, 'link', 'set', end.name, 'up']);
}
