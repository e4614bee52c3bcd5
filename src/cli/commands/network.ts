import { Command } from 'commander';
import type { CreateNetworkRequest, Network } from '../../service/api-types.js';
import { seg } from '../client.js';
import { formatNetworks } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine, removeEach } from './common.js';

interface CreateOptions {
  driver: string;
  subnet: string;
  gateway?: string;
}

export function networkCommand(): Command {
  const network = new Command('network').description('manage networks (a subnet and a broadcast domain on the switch)');

  network
    .command('create')
    .description('create a network and print its name')
    .argument('<name>', "network name: letters, digits, '_', '.', '-' (at most 64)")
    .option('-d, --driver <driver>', 'network mode: internal (nat, transparent, l2bridge, l2tunnel, overlay are not implemented yet)', 'internal')
    .requiredOption('--subnet <cidr>', 'IPv4 subnet of the network, e.g. 10.88.0.0/24')
    .option('--gateway <ip>', 'gateway address inside the subnet; endpoints get a default route via it')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  vsw network create -d internal --subnet 10.90.0.0/24 blue')
    .action(async (name: string, opts: CreateOptions, command: Command) => {
      const body: CreateNetworkRequest = { name, driver: opts.driver as CreateNetworkRequest['driver'], subnet: opts.subnet };
      if (opts.gateway !== undefined) body.gateway = opts.gateway;
      const created = await clientOf(command).post<Network>('/networks', body);
      printLine(created.name);
    });

  network
    .command('ls')
    .alias('list')
    .description('list networks')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .action(async (opts: { json?: boolean }, command: Command) => {
      const networks = await clientOf(command).get<Network[]>('/networks');
      if (opts.json) printJson(networks);
      else printLine(formatNetworks(networks));
    });

  network
    .command('inspect')
    .description('print a network as JSON, with the ids of its endpoints')
    .argument('<name>', 'network name')
    .addOption(leafSocketOption())
    .action(async (name: string, _opts: object, command: Command) => {
      printJson(await clientOf(command).get<Network>(`/networks/${seg(name)}`));
    });

  network
    .command('rm')
    .alias('remove')
    .description('remove networks (they must have no endpoints left)')
    .argument('<name...>', 'network names')
    .addOption(leafSocketOption())
    .action(async (names: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      await removeEach(names, (name) => client.delete(`/networks/${seg(name)}`));
    });

  return network;
}
