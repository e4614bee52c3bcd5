#!/usr/bin/env node
/**
 * `vsw`: the command line of the vsw virtual switch. Every command but
 * `daemon` and `system reset` talks HTTP to the daemon over its unix socket.
 */
import { Command } from 'commander';
import { daemonCommand } from './commands/daemon.js';
import { endpointCommand } from './commands/endpoint.js';
import { networkCommand } from './commands/network.js';
import { flowsCommand, policyCommand, traceCommand } from './commands/policy.js';
import { runCommand } from './commands/run.js';
import { natCommand } from './commands/nat.js';
import { fabricCommand } from './commands/fabric.js';
import { lbCommand } from './commands/lb.js';
import { overlayCommand } from './commands/overlay.js';
import { statsCommand } from './commands/stats.js';
import { systemCommand } from './commands/system.js';
import { cniCommand } from './commands/cni.js';
import { captureCommand } from './commands/capture.js';
import { programControllerOption, programSocketOption, reportError } from './commands/common.js';
import { controllerCommand } from './commands/controller.js';
import { cliVersion } from './version.js';

function buildProgram(): Command {
  const program = (
    new Command('vsw')
      .description('vsw: a userspace virtual switch for Linux containers (networks, endpoints, compartments)')
      .version(cliVersion(), '-v, --version', 'print the version of vsw')
      .addOption(programSocketOption())
      .addOption(programControllerOption())
      // Options after a subcommand belong to it; this is what lets `vsw run ... CMD -x` pass -x to CMD.
      .enablePositionalOptions()
      .addCommand(daemonCommand())
      .addCommand(controllerCommand())
      .addCommand(networkCommand())
      .addCommand(endpointCommand())
      .addCommand(runCommand())
      .addCommand(policyCommand())
      .addCommand(flowsCommand())
      .addCommand(traceCommand())
      .addCommand(captureCommand())
      .addCommand(statsCommand())
      .addCommand(natCommand())
      .addCommand(overlayCommand())
      .addCommand(fabricCommand())
      .addCommand(lbCommand())
      .addCommand(systemCommand())
      .addCommand(cniCommand())
      .addHelpText(
        'after',
        [
          '',
          'Getting started:',
          '  sudo -E vsw daemon --default-network        # in one terminal',
          '  sudo -E vsw run --network default -- ip addr # in another',
          '',
          'See docs/CLI.md for every command with examples.',
        ].join('\n'),
      )
  );
  forEachCommand(program, (c) => c.showHelpAfterError('(add --help for usage)'));
  return program;
}

/** Settings made on the program reach only subcommands created after them with .command(), not added ones. */
function forEachCommand(command: Command, apply: (c: Command) => void): void {
  apply(command);
  for (const sub of command.commands) forEachCommand(sub, apply);
}

try {
  await buildProgram().parseAsync(process.argv);
} catch (err) {
  reportError(err);
  process.exit(1);
}
