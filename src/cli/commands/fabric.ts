/**
 * `vsw fabric`: a fabric host's container addresses. An l2bridge network made
 * with --fabric IFNAME faces container hosts whose l2tunnel networks send
 * every frame of their containers to it; each container address behind that
 * port is a fabric endpoint, with its own policy (vsw policy ... ENDPOINT),
 * counters, trace and flows. `vsw endpoint ls|inspect|rm` show and remove them.
 */
import { Command } from 'commander';
import type { Endpoint } from '../../service/api-types.js';
import { seg } from '../client.js';
import { clientOf, leafSocketOption, printLine } from './common.js';

export function fabricCommand(): Command {
  const fabric = new Command('fabric').description("a fabric host's container addresses: the l2tunnel containers behind an l2bridge network's fabric port");
  fabric
    .command('add')
    .description('add a container address behind the network\'s fabric port, and print its endpoint id')
    .argument('<network>', 'an l2bridge network made with --fabric IFNAME')
    .requiredOption('--ip <address>', "the container's address (as its l2tunnel network gave it)")
    .requiredOption('--mac <mac>', "its container host's uplink MAC: every frame from and to the container carries it")
    .option('--name <name>', 'endpoint name (default: fabric-IP)')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample (on the fabric host):\n  vsw network create fab -d l2bridge --uplink eth1 --fabric eth2 --subnet 192.168.1.0/24\n  vsw fabric add fab --ip 192.168.1.130 --mac 02:42:c0:a8:01:0a --name web\n  vsw policy acl add web --action block --priority 10 --direction in --protocol tcp --dst-port 22')
    .action(async (network: string, opts: { ip: string; mac: string; name?: string }, command: Command) => {
      const created = await clientOf(command).post<Endpoint>(`/networks/${seg(network)}/fabric-endpoints`, { ip: opts.ip, mac: opts.mac, ...(opts.name === undefined ? {} : { name: opts.name }) });
      printLine(created.id);
    });
  return fabric;
}
