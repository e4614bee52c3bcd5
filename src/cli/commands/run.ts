/**
 * `vsw run`: a command in a fresh compartment (network namespace) attached to
 * a network, the way `docker run --network` feels. The daemon creates the
 * compartment and its endpoint; the CLI runs the command there with
 * `ip netns exec` and removes the compartment when the command ends. This is
 * the one command that touches the host itself, because the command must be
 * the CLI's child to share its terminal.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { Command } from 'commander';
import type { CreateEndpointRequest, PortMapping } from '../../service/api-types.js';
import { seg, type Client } from '../client.js';
import { deleteNetns } from '../../host/netns.js';
import { CliError, DaemonError, UnreachableError } from '../errors.js';
import { collectPublish, exitCodeOf, randomCompartmentName } from '../format.js';
import { clientOf, leafSocketOption, reportError } from './common.js';

const HANDLED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

interface RunOptions {
  network: string;
  name?: string;
  ip?: string;
  mac?: string;
  spoofGuard?: boolean;
  publish?: PortMapping[];
}

export function runCommand(): Command {
  return new Command('run')
    .description('run a command in a new compartment (network namespace) attached to a network; the compartment goes away when the command exits')
    .requiredOption('--network <name>', 'network to attach the compartment to')
    .option('--name <name>', 'compartment name (default: vsw- and 8 random hex digits)')
    .option('--ip <address>', 'address of the compartment, e.g. 10.88.0.5 (default: the next free one)')
    .option('--mac <mac>', 'MAC address of the compartment (default: derived from the IP)')
    .option('--no-spoof-guard', 'let the compartment send from any MAC and IP (default: only its own)')
    .option('-p, --publish <mapping>', 'nat networks: publish a port, [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp]; without HOSTPORT vsw picks a free one (repeatable)', collectPublish)
    .addOption(leafSocketOption())
    .argument('<command...>', 'the command to run and its arguments')
    // Everything from the command on belongs to it: `vsw run --network n ping -c 1 x` needs no `--`.
    .passThroughOptions()
    .addHelpText('after', '\nExamples:\n  vsw run --network default -- ip addr\n  vsw run --network default --name web --ip 10.88.0.80 -- python3 -m http.server 80\n  vsw run --network mynat --name web -p 8080:80 -- python3 -m http.server 80')
    .action(async (argv: string[], opts: RunOptions, command: Command) => {
      process.exitCode = await runInCompartment(clientOf(command), opts, argv);
    });
}

async function runInCompartment(client: Client, opts: RunOptions, argv: string[]): Promise<number> {
  const name = opts.name ?? randomCompartmentName();
  const signals = new SignalRelay();
  try {
    await client.post('/compartments', { name });
    try {
      await client.post('/endpoints', endpointRequest(opts, name));
      if (signals.received) return exitCodeOf(null, signals.received);
      return await runChild(name, argv, signals);
    } finally {
      await removeCompartment(client, name);
    }
  } finally {
    signals.dispose();
  }
}

function endpointRequest(opts: RunOptions, netns: string): CreateEndpointRequest {
  // The endpoint takes the compartment's name, so `vsw run --name web` is followed by `vsw policy ... web`.
  const body: CreateEndpointRequest = { network: opts.network, netns, name: netns };
  if (opts.ip !== undefined) body.ip = opts.ip;
  if (opts.mac !== undefined) body.mac = opts.mac;
  if (opts.spoofGuard === false) body.spoofGuard = false;
  if (opts.publish?.length) body.publish = opts.publish;
  return body;
}

function runChild(netns: string, argv: string[], signals: SignalRelay): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, ...argv], { stdio: 'inherit' });
    signals.attach(child);
    child.once('error', (err: NodeJS.ErrnoException) => {
      signals.detach();
      reject(err.code === 'ENOENT' ? new CliError('cannot run `ip`: install iproute2 and try again.') : err);
    });
    child.once('exit', (code, signal) => {
      signals.detach();
      resolve(exitCodeOf(code, signal));
    });
  });
}

/**
 * Asks the daemon to remove the compartment (its endpoint, its processes, the
 * namespace). When the daemon is gone, or restarted and forgot it, the CLI
 * removes the namespace itself: it created it, it must not leak it.
 */
async function removeCompartment(client: Client, name: string): Promise<void> {
  try {
    await client.delete(`/compartments/${seg(name)}`);
    return;
  } catch (err) {
    const daemonForgot = err instanceof DaemonError && err.status === 404;
    if (!(err instanceof UnreachableError) && !daemonForgot) {
      reportError(err);
      return;
    }
  }
  try {
    // The same removal the daemon does; a namespace already gone (the daemon won the race) is fine.
    await deleteNetns(name, { killProcesses: true });
  } catch (err) {
    const reason = (err as Error).message.trim().split('\n')[0].replace(/\.$/, '');
    reportError(new CliError(`could not remove network namespace ${name} (${reason}): remove it with \`sudo ip netns delete ${name}\`.`));
  }
}

/**
 * Catches SIGINT/SIGTERM/SIGHUP for the whole run. While the command runs they
 * go to it (it decides how to end) — except SIGINT, which a terminal's Ctrl-C
 * already delivers to the command itself (it shares vsw's process group), so
 * relaying it would interrupt the command twice. Before and after the command,
 * the first signal makes vsw clean up and stop, and a second exits at once.
 * SIGHUP (the terminal went away) is handled so the compartment is still removed.
 */
class SignalRelay {
  received?: NodeJS.Signals;
  private child?: ChildProcess;
  private readonly handler = (signal: NodeJS.Signals): void => {
    if (this.child) {
      if (signal !== 'SIGINT') this.child.kill(signal);
      return;
    }
    if (this.received) process.exit(exitCodeOf(null, signal));
    this.received = signal;
  };

  constructor() {
    for (const s of HANDLED_SIGNALS) process.on(s, this.handler);
  }

  attach(child: ChildProcess): void {
    this.child = child;
  }

  detach(): void {
    this.child = undefined;
  }

  dispose(): void {
    for (const s of HANDLED_SIGNALS) process.off(s, this.handler);
  }
}
