/**
 * `vsw system reset`: everything vsw made on the host, removed, and the saved
 * state with it. Like `vsw daemon` and `vsw run`, it works on the host itself
 * (the daemon must be stopped: it would recreate what this removes), so it
 * imports the service lazily.
 */
import { Command } from 'commander';
import { DEFAULT_STATE_DIR } from '../../service/api-types.js';
import { requireNetAdmin } from '../../host/privileges.js';
import { leafSocketOption, printLine, reportError, socketOf, stateDirOption } from './common.js';

interface ResetOptions {
  stateDir: string;
}

export function systemCommand(): Command {
  return new Command('system')
    .description('the host vsw runs on')
    .addCommand(
      new Command('reset')
        .description('remove everything vsw made on the host (endpoint TAPs, compartments and the processes in them, nat host interfaces, nftables tables, the ip_forward it set) and the saved state; stop the daemon first')
        .addOption(stateDirOption())
        .addOption(leafSocketOption())
        .addHelpText(
          'after',
          [
            '',
            'A stopped daemon leaves endpoints, compartments and host changes in place so that containers keep',
            'their interfaces and the next daemon takes over; this is how to remove them instead. Namespaces',
            `vsw did not create stay (only their vsw TAPs go). The state directory defaults to ${DEFAULT_STATE_DIR}.`,
            '',
            'Example:',
            '  sudo kill -TERM $(pidof -s vsw) ; sudo -E vsw system reset',
          ].join('\n'),
        )
        .action(async (opts: ResetOptions, command: Command) => {
          requireNetAdmin('vsw system reset');
          const { resetHost } = await import('../../service/reset.js');
          const report = await resetHost(opts.stateDir, socketOf(command));
          for (const line of report.removed) printLine(line);
          if (report.removed.length === 0 && report.problems.length === 0) printLine(`nothing to remove: ${opts.stateDir} holds no saved state`);
          for (const problem of report.problems) reportError(new Error(problem));
          if (report.problems.length > 0) process.exitCode = 1;
        }),
    );
}
