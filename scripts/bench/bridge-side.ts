/**
 * The kernel's answer to the job `npm run bench` gives vsw: a Linux bridge
 * with a veth pair into each of two namespaces, the inner ends named eth0.
 */
import { ifMtu, type Prefix } from '../bench-lib.js';
import { deleteLink, netnsAdd, pickSubnet, sh, vethInto, type Cleanup, type Side } from './context.js';

export async function setupBridge(cleanup: Cleanup, prefix: string, taken: readonly Prefix[]): Promise<{ side: Side; prefix: Prefix }> {
  const { cidr, prefix: pfx, x } = await pickSubnet(taken);
  const br = `${prefix}-br`;
  cleanup.add(`delete bridge ${br}`, () => deleteLink(br));
  await sh('ip', ['link', 'add', br, 'type', 'bridge']);
  await sh('ip', ['link', 'set', br, 'up']);
  const ips: string[] = [];
  for (const n of [1, 2]) {
    const ns = `${prefix}-b${n}`;
    const hostEnd = `${prefix}-b${n}h`;
    const ip = `10.${x}.0.${n + 1}`;
    await netnsAdd(cleanup, ns);
    await vethInto(cleanup, hostEnd, ns);
    await sh('ip', ['link', 'set', hostEnd, 'master', br, 'up']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    ips.push(ip);
  }
  const side: Side = {
    name: 'bridge',
    subnet: cidr,
    clientNs: `${prefix}-b1`,
    serverNs: `${prefix}-b2`,
    clientIp: ips[0],
    serverIp: ips[1],
    mtu: await ifMtu(`${prefix}-b2`, 'eth0'),
  };
  return { side, prefix: pfx };
}
