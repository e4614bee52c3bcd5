import { Command } from 'commander';
import type { CreateEndpointRequest, Endpoint } from '../../service/api-types.js';
import { seg } from '../client.js';
import { collectPublish, formatEndpoints } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine, removeEach } from './common.js';

/** commander's options for `endpoint create` are the request body, field for field. */
type CreateOptions = CreateEndpointRequest & { host?: string };

export function endpointCommand(): Command {
  const endpoint = new Command('endpoint').description('manage endpoints (a TAP port on a network, inside a network namespace)');

  endpoint
    .command('create')
    .description('attach a network namespace to a network through a new TAP interface, and print the endpoint id')
    .requiredOption('--network <name>', 'network to attach to')
    .requiredOption('--netns <name>', 'existing network namespace: a name (see `ip netns list`) or a path such as /proc/PID/ns/net')
    .option('--ip <address>', 'address for the interface, e.g. 10.88.0.5 or 10.88.0.5/24 (default: the next free one)')
    .option('--mac <mac>', 'MAC address for the interface (default: derived from the IP)')
    .option('--ifname <name>', 'interface name inside the namespace (default: the first free ethN)')
    .option('--name <name>', 'endpoint name (default: NETNS-IFNAME)')
    .option('--no-spoof-guard', 'let the endpoint send from any MAC and IP (default: only its own)')
    .option('-p, --publish <mapping>', 'nat networks: publish a port, [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]; without HOSTPORT vsw picks a free one (repeatable)', collectPublish)
    .option('--host <name>', 'with --controller: the host to place the endpoint on (its agent makes it there)')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  sudo ip netns add c1\n  vsw endpoint create --network default --netns c1 --ip 10.88.0.10\n  vsw --controller /run/vsw/controller.sock endpoint create --network blue --host h1 --netns c1 --name web')
    .action(async (opts: CreateOptions, command: Command) => {
      const created = await clientOf(command).post<Endpoint>('/endpoints', createRequest(opts));
      printLine(created.id);
    });

  endpoint
    .command('ls')
    .alias('list')
    .description('list endpoints')
    .option('--network <name>', 'only the endpoints of this network')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .action(async (opts: { network?: string; json?: boolean }, command: Command) => {
      const query = opts.network === undefined ? '' : `?network=${seg(opts.network)}`;
      const endpoints = await clientOf(command).get<Endpoint[]>(`/endpoints${query}`);
      if (opts.json) printJson(endpoints);
      else printLine(formatEndpoints(endpoints));
    });

  endpoint
    .command('inspect')
    .description('print an endpoint as JSON')
    .argument('<id>', 'endpoint id (or a unique prefix of it) or name')
    .addOption(leafSocketOption())
    .action(async (id: string, _opts: object, command: Command) => {
      printJson(await clientOf(command).get<Endpoint>(`/endpoints/${seg(id)}`));
    });

  endpoint
    .command('rm')
    .alias('remove')
    .description('remove endpoints: their TAP interfaces disappear and their addresses are freed')
    .argument('<id...>', 'endpoint ids or names')
    .addOption(leafSocketOption())
    .action(async (ids: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      await removeEach(ids, (id) => client.delete(`/endpoints/${seg(id)}`));
    });

  return endpoint;
}

function createRequest(opts: CreateOptions): CreateEndpointRequest & { host?: string } {
  const body: CreateEndpointRequest & { host?: string } = { network: opts.network, netns: opts.netns, ...(opts.host === undefined ? {} : { host: opts.host }) };
  for (const key of ['ip', 'mac', 'ifname', 'name'] as const) {
    if (opts[key] !== undefined) body[key] = opts[key];
  }
  if (opts.spoofGuard === false) body.spoofGuard = false;
  if (opts.publish?.length) body.publish = opts.publish;
  return body;
}
