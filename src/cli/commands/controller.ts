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
}

export function controllerCommand(): Command {
  return new Command('controller')
    .description('run the network controller in the foreground: one API for many hosts, its state in etcd, applied by host agents (vsw daemon --agent)')
    .requiredOption('--etcd <urls>', 'etcd client URLs, comma-separated (http:// or https://)')
    .addOption(new Option('--socket <path>', 'unix socket of the controller API').default(DEFAULT_CONTROLLER_SOCKET))
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
      const etcd = connectEtcd({ urls, ca: opts.etcdCa, cert: opts.etcdCert, key: opts.etcdKey });
      const controller = new Controller(etcd, logger, cliVersion());
      await claimSocketPath(opts.socket);
      await controller.start(opts.socket);
      logger.info({ socket: opts.socket, etcd: urls }, 'controller listening');
      stopOnSignals(async () => {
        await controller.stop();
        etcd.close();
        await unlinkIfPresent(opts.socket);
      }, logger);
    });
}
