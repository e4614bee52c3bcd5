/**
 * `vsw cni install|uninstall`: puts the vsw CNI plugin where CNI runtimes look
 * (a launcher named vsw-cni in the plugin dir, a conflist per network in the
 * config dir) and takes it away again. Only files vsw wrote are removed: the
 * launcher carries a marker line, and a conflist is vsw's when its plugin is
 * of type vsw-cni.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { PLUGIN_TYPE, LATEST_VERSION, SUPPORTED_VERSIONS, type CniConfig, type CniPolicy } from '../../cni/plugin.js';
import { RESOURCE_NAME_PATTERN, type Network } from '../../service/api-types.js';
import { CliError, DaemonError, UnreachableError } from '../errors.js';
import { clientOf, leafSocketOption, printLine, socketOf } from './common.js';

export const DEFAULT_CNI_BIN_DIR = '/opt/cni/bin';
export const DEFAULT_CNI_CONF_DIR = '/etc/cni/net.d';
const LAUNCHER_MARKER = '# vsw-cni launcher, written by `vsw cni install`';
const PLUGIN_MAIN = fileURLToPath(new URL('../../cni/main.js', import.meta.url));

interface InstallOptions {
  network: string;
  name?: string;
  binDir: string;
  confDir: string;
  cniVersion: string;
  dns?: string[];
  policy?: string;
}

interface UninstallOptions {
  network?: string;
  binDir: string;
  confDir: string;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export function cniCommand(): Command {
  const cni = new Command('cni').description('the CNI plugin that puts containers of podman, containerd and the kubelet on vsw networks');

  cni
    .command('install')
    .description(`write the vsw-cni plugin launcher into the CNI plugin dir and a conflist for a vsw network into the CNI config dir`)
    .requiredOption('--network <name>', 'the vsw network the containers join')
    .option('--name <name>', 'the CNI network name runtimes know it by (podman --network NAME); default the vsw network name')
    .option('--bin-dir <dir>', 'CNI plugin dir', DEFAULT_CNI_BIN_DIR)
    .option('--conf-dir <dir>', 'CNI config dir', DEFAULT_CNI_CONF_DIR)
    .addOption(new Option('--cni-version <v>', 'cniVersion of the conflist').choices([...SUPPORTED_VERSIONS]).default(LATEST_VERSION))
    .option('--dns <address>', 'a nameserver to hand the containers in the result (repeatable)', collect)
    .option('--policy <file>', 'a JSON policy group {"name", "rules", "layer"?} applied to every endpoint')
    .addOption(leafSocketOption())
    .addHelpText(
      'after',
      [
        '',
        'The conflist names the daemon\'s socket; the launcher runs this installation of vsw with this node.',
        '',
        'Examples:',
        '  vsw network create -d nat --subnet 10.89.0.0/24 web',
        '  vsw cni install --network web                 # /opt/cni/bin/vsw-cni, /etc/cni/net.d/10-vsw-web.conflist',
        '  ctr run --cni --rm docker.io/library/busybox:latest c1 ip addr',
      ].join('\n'),
    )
    .action(async (opts: InstallOptions, command: Command) => {
      const name = opts.name ?? opts.network;
      if (!new RegExp(RESOURCE_NAME_PATTERN).test(name)) {
        throw new CliError(`CNI network name ${JSON.stringify(name)} is invalid: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit.`);
      }
      await checkNetwork(command, opts.network);
      const socket = socketOf(command);
      const plugin: Partial<CniConfig> & Record<string, unknown> = { type: PLUGIN_TYPE, network: opts.network, socket, capabilities: { portMappings: true, ips: true } };
      if (opts.dns?.length) plugin.dns = { nameservers: opts.dns };
      if (opts.policy !== undefined) plugin.policy = readPolicy(opts.policy);
      const conflist = { cniVersion: opts.cniVersion, name, plugins: [plugin] };
      mkdirSync(opts.binDir, { recursive: true });
      mkdirSync(opts.confDir, { recursive: true });
      const launcher = join(opts.binDir, PLUGIN_TYPE);
      if (existsSync(launcher) && !isOurLauncher(launcher)) {
        throw new CliError(`${launcher} exists and was not written by vsw: remove it or pass another --bin-dir.`);
      }
      writeFileSync(launcher, launcherScript(), { mode: 0o755 });
      const confPath = join(opts.confDir, `10-vsw-${name}.conflist`);
      writeFileSync(confPath, `${JSON.stringify(conflist, null, 2)}\n`, { mode: 0o644 });
      printLine(launcher);
      printLine(confPath);
    });

  cni
    .command('uninstall')
    .description('remove the conflists vsw wrote (all, or one network\'s) and, when none is left, the launcher')
    .option('--network <name>', 'only the conflists for this vsw network')
    .option('--bin-dir <dir>', 'CNI plugin dir', DEFAULT_CNI_BIN_DIR)
    .option('--conf-dir <dir>', 'CNI config dir', DEFAULT_CNI_CONF_DIR)
    .action((opts: UninstallOptions) => {
      const ours = vswConflists(opts.confDir);
      for (const { path, network } of ours) {
        if (opts.network !== undefined && network !== opts.network) continue;
        unlinkSync(path);
        printLine(path);
      }
      const launcher = join(opts.binDir, PLUGIN_TYPE);
      if (vswConflists(opts.confDir).length === 0 && existsSync(launcher) && isOurLauncher(launcher)) {
        unlinkSync(launcher);
        printLine(launcher);
      }
    });
  return cni;
}

function launcherScript(): string {
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  return `#!/bin/sh\n${LAUNCHER_MARKER}\nexec ${quote(process.execPath)} ${quote(PLUGIN_MAIN)} "$@"\n`;
}

function isOurLauncher(path: string): boolean {
  try {
    return readFileSync(path, 'utf8').includes(LAUNCHER_MARKER);
  } catch {
    return false;
  }
}

/** The conflists in `dir` whose plugins include vsw-cni, with the vsw network each names. */
function vswConflists(dir: string): { path: string; network: string }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const out: { path: string; network: string }[] = [];
  for (const file of names.filter((n) => n.endsWith('.conflist') || n.endsWith('.conf'))) {
    const path = join(dir, file);
    try {
      const parsed = JSON.parse(readFileSync(path, 'utf8')) as { plugins?: { type?: string; network?: string }[]; type?: string; network?: string };
      const plugin = (parsed.plugins ?? [parsed]).find((p) => p.type === PLUGIN_TYPE);
      if (plugin) out.push({ path, network: String(plugin.network) });
    } catch {
      // Not JSON, not ours.
    }
  }
  return out;
}

function readPolicy(file: string): CniPolicy {
  let policy: CniPolicy;
  try {
    policy = JSON.parse(readFileSync(file, 'utf8')) as CniPolicy;
  } catch (err) {
    throw new CliError(`--policy ${file} cannot be read as JSON (${(err as Error).message}): give a file holding one policy group.`);
  }
  if (typeof policy !== 'object' || policy === null || typeof policy.name !== 'string' || !Array.isArray(policy.rules)) {
    throw new CliError(`--policy ${file} is not a policy group: write {"name": "web", "rules": [...]} (see docs/VFP.md).`);
  }
  return policy;
}

/** The network must exist when the daemon can say; a stopped daemon is no reason to refuse (it may start later). */
async function checkNetwork(command: Command, network: string): Promise<void> {
  try {
    await clientOf(command).get<Network>(`/networks/${encodeURIComponent(network)}`);
  } catch (err) {
    if (err instanceof DaemonError && err.status === 404) {
      throw new CliError(`vsw network ${network} does not exist: create it first with \`vsw network create ${network} ...\`.`);
    }
    if (err instanceof UnreachableError) {
      process.stderr.write(`vsw: note: the daemon is not reachable, so network ${network} was not checked; containers get a clear error if it is missing.\n`);
      return;
    }
    throw err;
  }
}
