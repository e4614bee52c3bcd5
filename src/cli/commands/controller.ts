/**
 * `vsw controller`: the network controller (src/controller/controller.ts), in
 * the foreground: the northbound API on a unix socket over the state in
 * etcd, for the host agents (`vsw daemon --agent`) to apply.
 */
import { Command, Option } from 'commander';
import { CliError } from '../errors.js';
import { makeLogger, stopOnSignals } from './daemon.js';

export const DEFAULT_CONTROLLER_SOCKET = '/run/vsw/controller.sock';

interface ControllerCommandOptions {
  etcd: string;
  socket: string;
  etcdCa?: string;
  etcdCert?: string;
  etcdKey?: string;
  logLevel: string;
  pretty?: boolean;
  listen?: string;
  tokenFile?: string;
}

export function controllerCommand(): Command {
  return new Command('controller')
    .description('run the network controller in the foreground: one API for many hosts, its state in etcd, applied by host agents (vsw daemon --agent)')
    .requiredOption('--etcd <urls>', 'etcd client URLs, comma-separated (http:// or https://)')
    .addOption(new Option('--socket <path>', 'unix socket of the controller API').default(DEFAULT_CONTROLLER_SOCKET))
    .option('--listen <host:port>', 'serve the API on TCP too (needs --token-file): the CLI reaches it with --controller http://HOST:PORT and VSW_TOKEN')
    .option('--token-file <file>', 'file holding the token every TCP request must carry (Authorization: Bearer TOKEN)')
    .option('--etcd-ca <file>', 'PEM of the CA of the etcd members (client TLS)')
    .option('--etcd-cert <file>', "PEM of this client's certificate (client TLS)")
    .option('--etcd-key <file>', "PEM of this client's key (client TLS)")
    .addOption(new Option('--log-level <level>', 'least severe log level written').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'))
    .option('--pretty', 'human-readable, colored logs instead of JSON lines')
    .addHelpText(
      'after',
      [
        '',
        'Example (docs/CONTROLLER.md):',
        '  vsw controller --etcd http://10.0.0.1:2379 --socket /run/vsw/controller.sock',
        '  vsw daemon --agent --etcd http://10.0.0.1:2379 --host h1 --vtep 192.168.56.11     # on each host',
        '  vsw --controller /run/vsw/controller.sock network create -d overlay --subnet 10.10.0.0/24 --vni 4096 --hosts h1,h2 blue',
        '  vsw --controller /run/vsw/controller.sock endpoint create --network blue --host h1 --netns c1 --name web',
      ].join('\n'),
    )
    .action(async (opts: ControllerCommandOptions) => {
      const logger = makeLogger(opts.logLevel, opts.pretty ?? false);
      const { parseEtcdUrls, connectEtcd } = await import('../../controller/etcd.js');
      const { Controller } = await import('../../controller/controller.js');
      const { claimSocketPath, unlinkIfPresent } = await import('../../service/socket.js');
      const { cliVersion } = await import('../version.js');
      const urls = parseEtcdUrls(opts.etcd);
      if (typeof urls === 'string') throw new CliError(urls);
      const tcp = await tcpOptions(opts);
      const etcd = connectEtcd({ urls, ca: opts.etcdCa, cert: opts.etcdCert, key: opts.etcdKey });
      const controller = new Controller(etcd, logger, cliVersion());
      await claimSocketPath(opts.socket);
      try {
        await controller.start(opts.socket, tcp);
      } catch (err) {
        etcd.close();
        const reason = (err as Error).message.split('\n')[0].replace(/[.:\s]+$/, '');
        if (/schema version/.test(reason)) throw new CliError((err as Error).message);
        throw new CliError(`could not reach etcd at ${urls.join(', ')} (${reason}): check --etcd, that the members run, and the TLS flags (--etcd-ca, --etcd-cert, --etcd-key).`);
      }
      logger.info({ socket: opts.socket, etcd: urls }, 'controller listening');
      stopOnSignals(async () => {
        await controller.stop();
        etcd.close();
        await unlinkIfPresent(opts.socket);
      }, logger);
    });
}

/** --listen with --token-file, checked; undefined without --listen. */
async function tcpOptions(opts: ControllerCommandOptions): Promise<{ host: string; port: number; token: string } | undefined> {
  if (opts.listen === undefined) {
    if (opts.tokenFile !== undefined) throw new CliError('--token-file goes with --listen: add --listen HOST:PORT or leave it out.');
    return undefined;
  }
  const m = /^([0-9.]+|localhost):(\d{1,5})$/.exec(opts.listen);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new CliError(`--listen ${opts.listen} is not HOST:PORT: write e.g. 10.0.0.1:9480.`);
  if (opts.tokenFile === undefined) throw new CliError('--listen needs --token-file FILE: the TCP API is refused to requests without its token.');
  const { readFile } = await import('node:fs/promises');
  const token = (
    await readFile(opts.tokenFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`cannot read --token-file ${opts.tokenFile} (${err.code ?? err.message}): write a token into it, e.g. openssl rand -hex 32 > ${opts.tokenFile}.`);
    })
  ).trim();
  if (token.length < 16) throw new CliError(`the token in ${opts.tokenFile} is shorter than 16 characters: write a longer one, e.g. openssl rand -hex 32 > ${opts.tokenFile}.`);
  return { host: m[1], port: Number(m[2]), token };
}
