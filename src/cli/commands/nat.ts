import { Command } from 'commander';
import type { NatNetworkState } from '../../service/api-types.js';
import { seg } from '../client.js';
import { formatNat } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine } from './common.js';

export function natCommand(): Command {
  const nat = new Command('nat').description('inspect the NAT of nat networks: translations, published ports, counters');
  nat
    .command('ls')
    .alias('list')
    .description('list the live translations of every nat network (or one), with each network\'s counters and published ports')
    .option('--network <name>', 'only this nat network')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  vsw nat ls --network mynat')
    .action(async (opts: { network?: string; json?: boolean }, command: Command) => {
      const query = opts.network === undefined ? '' : `?network=${seg(opts.network)}`;
      const states = await clientOf(command).get<NatNetworkState[]>(`/nat${query}`);
      if (opts.json) printJson(states);
      else printLine(formatNat(states));
    });
  return nat;
}
