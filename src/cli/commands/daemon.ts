/**
 * `vsw daemon`: runs the daemon in the foreground until SIGTERM or SIGINT.
 * The one CLI command that imports the service, and it does so lazily so the
 * client commands never load fastify, the data plane or the native addon.
 */
import { constants } from 'node:os';
import { Command, Option } from 'commander';
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';
import { DEFAULT_DOCKER_SOCKET, DEFAULT_METRICS_ADDRESS, DEFAULT_STATE_DIR } from '../../service/api-types.js';
import { CliError } from '../errors.js';
import { leafSocketOption, socketOf, stateDirOption } from './common.js';

interface DaemonCommandOptions {
  stateDir: string;
  metrics?: string | true;
  docker?: string | true;
  defaultNetwork?: boolean;
  defaultSubnet: string;
  logLevel: string;
  pretty?: boolean;
  maxFlows: string;
  maxConnectionsPerPort: string;
  dnsUpstream?: string;
  agent?: boolean;
  etcd?: string;
  host?: string;
  vtep?: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

export function daemonCommand(): Command {
  return new Command('daemon')
    .description('run the vsw daemon in the foreground: the switch, and the API on a unix socket (needs root)')
    .addOption(leafSocketOption())
    .addOption(stateDirOption())
    .option('--metrics [address]', `serve Prometheus metrics at http://ADDRESS/metrics (PORT or HOST:PORT; alone: ${DEFAULT_METRICS_ADDRESS})`)
    .option('--docker [socket]', `serve the docker network driver (docker network create -d vsw) on SOCKET (alone: ${DEFAULT_DOCKER_SOCKET})`)
    .option('--default-network', 'create the internal network "default" at start, unless the saved state has it')
    .option('--default-subnet <cidr>', 'subnet of the default network', '10.88.0.0/24')
    .addOption(new Option('--log-level <level>', 'least severe log level written').choices(LOG_LEVELS).default('info'))
    .option('--pretty', 'human-readable, colored logs instead of JSON lines')
    .option('--max-flows <n>', 'entries of the unified flow table (cached flows)', '1048576')
    .option('--dns-upstream <servers>', "where the networks' resolvers forward names that are not their own: IPv4 ADDRESS[:PORT], comma-separated (default: the nameservers of /etc/resolv.conf)")
    .option('--max-connections-per-port <n>', 'tracked connections per endpoint; new ones beyond it are dropped and counted', '500000')
    .option('--agent', "be a host agent of the network controller: apply its state for this host from etcd (needs --etcd, --host, --vtep)")
    .option('--etcd <urls>', 'agent: the etcd client URLs, comma-separated (http:// or https://)')
    .option('--host <name>', "agent: this host's name in the controller (its networks' hosts and endpoints' --host)")
    .option('--vtep <ip>', "agent: this host's underlay address, the VTEP of its overlay networks")
    .option('--etcd-ca <file>', 'agent: PEM of the CA of the etcd members (client TLS)')
    .option('--etcd-cert <file>', "agent: PEM of this client's certificate (client TLS)")
    .option('--etcd-key <file>', "agent: PEM of this client's key (client TLS)")
    .addHelpText(
      'after',
      [
        '',
        `State: networks, endpoints, policies and compartments are saved in ${DEFAULT_STATE_DIR}/state.json (or --state-dir)`,
        'before the API answers, and come back when the daemon starts again. SIGTERM/SIGINT stop the daemon',
        'and leave every TAP, compartment and host change in place (containers keep their interfaces);',
        '`vsw system reset` removes them. docs/STATE.md has the details.',
        '',
        'Examples:',
        '  sudo -E vsw daemon --default-network --pretty',
        '  sudo -E vsw daemon --state-dir /tmp/vsw-test --socket /tmp/vsw-test.sock --metrics 127.0.0.1:9483',
        '  sudo -E vsw daemon --docker          # then: docker network create -d vsw --subnet 10.240.0.0/24 mynet',
      ].join('\n'),
    )
    .action(async (opts: DaemonCommandOptions, command: Command) => {
      await runDaemon(socketOf(command), opts);
    });
}

async function runDaemon(socketPath: string, opts: DaemonCommandOptions): Promise<void> {
  const maxFlows = positiveInt(opts.maxFlows, '--max-flows', 16);
  const maxConnectionsPerPort = positiveInt(opts.maxConnectionsPerPort, '--max-connections-per-port', 1);
  const logger = makeLogger(opts.logLevel, opts.pretty ?? false);
  const { Daemon } = await import('../../service/daemon.js');
  const { parseMetricsAddress } = await import('../../service/metrics.js');
  let metrics;
  if (opts.metrics !== undefined) {
    metrics = parseMetricsAddress(opts.metrics === true ? DEFAULT_METRICS_ADDRESS : opts.metrics);
    if (typeof metrics === 'string') throw new CliError(metrics);
  }
  let dnsUpstreams;
  if (opts.dnsUpstream !== undefined) {
    const { parseUpstreams } = await import('../../service/dns.js');
    dnsUpstreams = parseUpstreams(opts.dnsUpstream);
    if (typeof dnsUpstreams === 'string') throw new CliError(dnsUpstreams);
  }
  const agent = await agentOptions(opts);
  const daemon = await Daemon.start({
    socketPath,
    dnsUpstreams,
    agent,
    stateDir: opts.stateDir,
    metrics,
    docker: opts.docker === undefined ? undefined : opts.docker === true ? DEFAULT_DOCKER_SOCKET : opts.docker,
    logger,
    defaultNetwork: opts.defaultNetwork ? { name: 'default', subnet: opts.defaultSubnet } : undefined,
    dataPlane: { maxFlows, maxConnectionsPerPort },
    onFatal: (err, d) => {
      logger.fatal({ err }, 'the data plane died: stopping');
      void d.stop().finally(() => process.exit(1));
    },
  });
  stopOnSignals(() => daemon.stop(), logger);
}

function positiveInt(text: string, flag: string, min: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > 1 << 26) throw new CliError(`${flag} ${text} is not usable: give a whole number from ${min} to ${1 << 26}.`);
  return n;
}

/** First signal: a clean stop, then exit 0. A second one while stopping: exit at once. */
export function stopOnSignals(stop: () => Promise<void>, logger: Logger): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      logger.warn({ signal }, 'second signal while stopping: exiting now; the connections in flight may not be saved');
      process.exit(128 + (constants.signals[signal] ?? 0));
    }
    stopping = true;
    logger.info({ signal }, 'signal received: stopping');
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  for (const s of STOP_SIGNALS) process.on(s, onSignal);
}

export function makeLogger(level: string, human: boolean): Logger {
  const options = { level, base: { pid: process.pid, name: 'vsw' } };
  // Synchronous writes: the daemon exits right after logging "stopped", and an async buffer would lose it.
  if (human) return pino(options, pretty({ colorize: process.stdout.isTTY, sync: true }));
  return pino(options, pino.destination({ dest: 1, sync: true }));
}

/** --agent and its flags, checked: all of --etcd, --host and --vtep, or none of them without --agent. */
async function agentOptions(opts: DaemonCommandOptions): Promise<{ etcd: { urls: string[]; ca?: string; cert?: string; key?: string }; host: string; vtep: string } | undefined> {
  const given = [opts.etcd, opts.host, opts.vtep, opts.etcdCa, opts.etcdCert, opts.etcdKey].some((v) => v !== undefined);
  if (!opts.agent) {
    if (given) throw new CliError('--etcd, --host, --vtep and the --etcd-* files belong to --agent: add --agent, or leave them out.');
    return undefined;
  }
  if (opts.etcd === undefined || opts.host === undefined || opts.vtep === undefined) throw new CliError('--agent needs --etcd URLS, --host NAME and --vtep IP: e.g. --agent --etcd http://10.0.0.1:2379 --host h1 --vtep 192.168.56.11.');
  const { parseEtcdUrls } = await import('../../controller/etcd.js');
  const urls = parseEtcdUrls(opts.etcd);
  if (typeof urls === 'string') throw new CliError(urls);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(opts.host)) throw new CliError(`--host ${opts.host} is not a name of letters, digits, '_', '.', '-' (at most 64): pick another.`);
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(opts.vtep)) throw new CliError(`--vtep ${opts.vtep} is not an IPv4 address: pass this host's underlay address.`);
  return { etcd: { urls, ca: opts.etcdCa, cert: opts.etcdCert, key: opts.etcdKey }, host: opts.host, vtep: opts.vtep };
}
