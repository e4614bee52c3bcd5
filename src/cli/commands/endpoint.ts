import { Command, Option } from 'commander';
import type { CreateEndpointRequest, Endpoint } from '../../service/api-types.js';
import { seg } from '../client.js';
import { CliError } from '../errors.js';
import { collectPublish, formatEndpoints } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine, removeEach } from './common.js';

/** commander's options for `endpoint create` are the request body, field for field. */
type CreateOptions = Omit<CreateEndpointRequest, 'vhostUser'> & { host?: string; vhostUser?: string; vhostMode?: 'server' | 'client' };

export function endpointCommand(): Command {
  const endpoint = new Command('endpoint').description("manage endpoints (a TAP port on a network, inside a network namespace; or a VM's NIC over vhost-user)");

  endpoint
    .command('create')
    .description("attach a network namespace to a network through a new TAP interface (or a VM through a vhost-user socket), and print the endpoint id")
    .requiredOption('--network <name>', 'network to attach to')
    .option('--netns <name>', 'existing network namespace: a name (see `ip netns list`) or a path such as /proc/PID/ns/net')
    .option('--vhost-user <path>', "instead of --netns: a VM's virtio-net NIC; vsw serves a vhost-user socket at PATH for the VMM (QEMU: -chardev socket,path=PATH -netdev vhost-user; docs/VM.md)")
    .addOption(new Option('--vhost-mode <mode>', 'with --vhost-user: server (vsw listens, the default) or client (vsw connects to a socket the VMM serves)').choices(['server', 'client']))
    .option('--ip <address>', 'address for the interface, e.g. 10.88.0.5 or 10.88.0.5/24 (default: the next free one)')
    .option('--mac <mac>', 'MAC address for the interface (default: derived from the IP)')
    .option('--ifname <name>', 'interface name inside the namespace (default: the first free ethN)')
    .option('--name <name>', 'endpoint name (default: NETNS-IFNAME)')
    .option('--no-spoof-guard', 'let the endpoint send from any MAC and IP (default: only its own)')
    .option('-p, --publish <mapping>', 'nat networks: publish a port, [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]; without HOSTPORT vsw picks a free one (repeatable)', collectPublish)
    .option('--host <name>', 'with --controller: the host to place the endpoint on (its agent makes it there)')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  sudo ip netns add c1\n  vsw endpoint create --network default --netns c1 --ip 10.88.0.10\n  vsw endpoint create --network default --vhost-user /run/vsw/vm1.sock --mac 52:54:00:00:00:01\n  vsw --controller /run/vsw/controller.sock endpoint create --network blue --host h1 --netns c1 --name web')
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
  if (opts.netns === undefined && opts.vhostUser === undefined) throw new CliError('say what to attach: --netns NAME for a namespace, or --vhost-user PATH for a VM.');
  if (opts.netns !== undefined && opts.vhostUser !== undefined) throw new CliError('--netns and --vhost-user exclude each other: an endpoint is a TAP in a namespace or a VM\'s NIC.');
  if (opts.vhostMode !== undefined && opts.vhostUser === undefined) throw new CliError('--vhost-mode goes with --vhost-user PATH.');
  const body: CreateEndpointRequest & { host?: string } = {
    network: opts.network,
    ...(opts.netns === undefined ? {} : { netns: opts.netns }),
    ...(opts.vhostUser === undefined ? {} : { vhostUser: { socket: opts.vhostUser, ...(opts.vhostMode === undefined ? {} : { mode: opts.vhostMode }) } }),
    ...(opts.host === undefined ? {} : { host: opts.host }),
  };
  for (const key of ['ip', 'mac', 'ifname', 'name'] as const) {
    if (opts[key] !== undefined) body[key] = opts[key];
  }
  if (opts.spoofGuard === false) body.spoofGuard = false;
  if (opts.publish?.length) body.publish = opts.publish;
  return body;
}
