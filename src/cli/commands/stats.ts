import { Command } from 'commander';
import type { StatsResponse } from '../../service/api-types.js';
import { formatStats } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine } from './common.js';

export function statsCommand(): Command {
  return new Command('stats')
    .description('show per-port counters (frames, bytes, drops by reason) and the MAC table counters')
    .option('--json', 'print JSON instead of tables')
    .addOption(leafSocketOption())
    .action(async (opts: { json?: boolean }, command: Command) => {
      const stats = await clientOf(command).get<StatsResponse>('/stats');
      if (opts.json) printJson(stats);
      else printLine(formatStats(stats));
    });
}
