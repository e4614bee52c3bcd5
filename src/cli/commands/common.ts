import { Option, type Command } from 'commander';
import { DEFAULT_SOCKET_PATH, DEFAULT_STATE_DIR } from '../../service/api-types.js';
import { Client } from '../client.js';
import { UnreachableError } from '../errors.js';

/**
 * --socket on the program (where VSW_SOCKET and the default live) and on every
 * leaf command, so it may be written before or after the subcommand even
 * though the program uses positional options (for `vsw run ... CMD -x`).
 */
export function programSocketOption(): Option {
  return new Option('--socket <path>', 'unix socket of the vsw daemon').env('VSW_SOCKET').default(DEFAULT_SOCKET_PATH);
}

export function leafSocketOption(): Option {
  return new Option('--socket <path>', `unix socket of the vsw daemon (env VSW_SOCKET, default ${DEFAULT_SOCKET_PATH})`);
}

/** --state-dir of `vsw daemon` and `vsw system reset`. */
export function stateDirOption(): Option {
  return new Option('--state-dir <dir>', 'directory of the saved state (state.json) and the daemon\'s lock').env('VSW_STATE_DIR').default(DEFAULT_STATE_DIR);
}

/** --controller on the program: the CLI talks to a network controller's socket instead of a daemon's. */
export function programControllerOption(): Option {
  return new Option('--controller <path>', "unix socket of a network controller (vsw controller): the commands then act on the controller's hosts").env('VSW_CONTROLLER');
}

/** The nearest --socket given, from the command up to the program; --controller wins over both. */
export function socketOf(command: Command): string {
  for (let c: Command | null = command; c; c = c.parent) {
    const controller = c.opts<{ controller?: string }>().controller;
    if (controller !== undefined) return controller;
  }
  for (let c: Command | null = command; c; c = c.parent) {
    const socket = c.opts<{ socket?: string }>().socket;
    if (socket !== undefined) return socket;
  }
  return DEFAULT_SOCKET_PATH;
}

export function clientOf(command: Command): Client {
  return new Client(socketOf(command));
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

export function reportError(err: unknown): void {
  process.stderr.write(`vsw: ${err instanceof Error ? err.message : String(err)}\n`);
}

/**
 * Removes each named resource, printing its name when done, like `docker rm`:
 * one failure does not stop the others, but the exit status says it happened.
 * An unreachable daemon stops everything at once (the others would fail alike).
 */
export async function removeEach(names: readonly string[], remove: (name: string) => Promise<void>): Promise<void> {
  for (const name of names) {
    try {
      await remove(name);
      printLine(name);
    } catch (err) {
      if (err instanceof UnreachableError) throw err;
      reportError(err);
      process.exitCode = 1;
    }
  }
}
