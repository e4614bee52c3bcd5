/**
 * `vsw lb`: load balancers. A VIP (an address of the network's subnet) and a
 * port, balanced over backends in the switch at each client's port, with
 * Maglev hashing, optional health probes, drains and client-ip affinity
 * (docs/LOADBALANCER.md).
 */
import { Command, InvalidArgumentError } from 'commander';
import type { CreateLoadBalancerRequest, LbProbe, LoadBalancer } from '../../service/api-types.js';
import { seg } from '../client.js';
import { collectValues, formatTable, parseWholeNumber } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine, removeEach } from './common.js';

interface CreateOptions {
  network: string;
  vip?: string;
  port: string;
  backend?: string[];
  probe?: string;
  probeInterval?: number;
  probeTimeout?: number;
  probeUnhealthy?: number;
  probeHealthy?: number;
  affinity?: string;
  publish?: number;
}

/** "80", "80/tcp", "53/udp". */
export function parseLbPort(text: string): { port: number; protocol: 'tcp' | 'udp' } {
  const m = /^(\d{1,5})(?:\/(tcp|udp))?$/.exec(text);
  const port = m ? Number(m[1]) : 0;
  if (!m || port < 1 || port > 65535) throw new InvalidArgumentError(`--port ${text} is not PORT[/tcp|udp] with a port from 1 to 65535: pass e.g. --port 80 or --port 53/udp.`);
  return { port, protocol: (m[2] ?? 'tcp') as 'tcp' | 'udp' };
}

/** "tcp", "http", "http:/healthz". */
export function parseProbe(text: string): LbProbe {
  if (text === 'tcp') return { kind: 'tcp' };
  const m = /^http(?::(\/\S*))?$/.exec(text);
  if (!m) throw new InvalidArgumentError(`--probe ${text} is neither tcp nor http[:/PATH]: pass e.g. --probe tcp or --probe http:/healthz.`);
  return { kind: 'http', path: m[1] ?? '/' };
}

export function formatLoadBalancers(lbs: readonly LoadBalancer[]): string {
  const rows = lbs.map((lb) => {
    const up = lb.backends.filter((b) => b.state === 'active').length;
    return [lb.name, lb.network, `${lb.vip}:${lb.port}/${lb.protocol}`, `${up}/${lb.backends.length}`, lb.probe ? (lb.probe.kind === 'http' ? `http:${lb.probe.path ?? '/'}` : 'tcp') : '-', lb.affinity];
  });
  return formatTable(['NAME', 'NETWORK', 'VIP', 'ACTIVE', 'PROBE', 'AFFINITY'], rows);
}

export function lbCommand(): Command {
  const lb = new Command('lb').description('load balancers: a VIP balanced over backend endpoints in the switch');
  lb.command('create')
    .description('create a load balancer and print its name')
    .argument('<name>', "load balancer name: letters, digits, '_', '.', '-' (at most 64)")
    .requiredOption('--network <name>', 'the network of the VIP and its backends (internal, nat, overlay or transparent)')
    .requiredOption('--port <port[/proto]>', 'the VIP port, with tcp (default) or udp: 80, 80/tcp, 53/udp')
    .option('--vip <ip>', "the VIP: an address of the network's subnet no endpoint has (default: the next free one)")
    .option('--backend <endpoint[:port]>', "a backend: an endpoint name or id, or an overlay network's remote endpoint address, with its port (default the VIP's); repeatable", collectValues)
    .option('--probe <kind>', 'health probe of each backend: tcp (connect) or http[:/PATH] (GET, 2xx or 3xx); default none (backends count as up)')
    .option('--probe-interval <ms>', 'milliseconds between probes of a backend (default 2000)', (v) => parseWholeNumber(v, '--probe-interval'))
    .option('--probe-timeout <ms>', 'milliseconds a probe may take (default 1000)', (v) => parseWholeNumber(v, '--probe-timeout'))
    .option('--probe-unhealthy <n>', 'failed probes in a row that take a backend out (default 2)', (v) => parseWholeNumber(v, '--probe-unhealthy'))
    .option('--probe-healthy <n>', 'passed probes in a row that bring it back (default 2)', (v) => parseWholeNumber(v, '--probe-healthy'))
    .option('--publish <hostport>', 'nat networks: publish the VIP on this host port too (outside traffic to it is balanced like the VIP\'s)', (v) => parseWholeNumber(v, '--publish'))
    .option('--affinity <mode>', 'none (each connection hashed on its 5-tuple, the default) or client-ip (every connection of a client to one backend)')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample:\n  vsw lb create web --network blue --vip 10.90.0.100 --port 80 --backend web1 --backend web2:8080 --probe http:/\n  curl http://10.90.0.100/   (from any endpoint of blue)')
    .action(async (name: string, opts: CreateOptions, command: Command) => {
      const { port, protocol } = parseLbPort(opts.port);
      const body: CreateLoadBalancerRequest = { name, network: opts.network, port, protocol, backends: opts.backend ?? [] };
      if (opts.vip !== undefined) body.vip = opts.vip;
      if (opts.publish !== undefined) body.publish = opts.publish;
      if (opts.affinity !== undefined) {
        if (opts.affinity !== 'none' && opts.affinity !== 'client-ip') throw new InvalidArgumentError(`--affinity ${opts.affinity} is neither none nor client-ip.`);
        body.affinity = opts.affinity;
      }
      if (opts.probe !== undefined) {
        body.probe = parseProbe(opts.probe);
        if (opts.probeInterval !== undefined) body.probe.intervalMs = opts.probeInterval;
        if (opts.probeTimeout !== undefined) body.probe.timeoutMs = opts.probeTimeout;
        if (opts.probeUnhealthy !== undefined) body.probe.unhealthyThreshold = opts.probeUnhealthy;
        if (opts.probeHealthy !== undefined) body.probe.healthyThreshold = opts.probeHealthy;
      } else if ([opts.probeInterval, opts.probeTimeout, opts.probeUnhealthy, opts.probeHealthy].some((v) => v !== undefined)) {
        throw new InvalidArgumentError('--probe-interval, --probe-timeout, --probe-unhealthy and --probe-healthy need --probe tcp or --probe http[:/PATH].');
      }
      const created = await clientOf(command).post<LoadBalancer>('/loadbalancers', body);
      printLine(created.name);
    });

  lb.command('ls')
    .alias('list')
    .description('list load balancers')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .action(async (opts: { json?: boolean }, command: Command) => {
      const lbs = await clientOf(command).get<LoadBalancer[]>('/loadbalancers');
      if (opts.json) printJson(lbs);
      else printLine(formatLoadBalancers(lbs));
    });

  lb.command('inspect')
    .description("print a load balancer as JSON, with each backend's state, probe health and connection counters")
    .argument('<name>', 'load balancer name or id')
    .addOption(leafSocketOption())
    .action(async (name: string, _opts: object, command: Command) => {
      printJson(await clientOf(command).get<LoadBalancer>(`/loadbalancers/${seg(name)}`));
    });

  lb.command('rm')
    .alias('remove')
    .description('remove load balancers (their VIPs go back to the network)')
    .argument('<name...>', 'load balancer names or ids')
    .addOption(leafSocketOption())
    .action(async (names: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      await removeEach(names, (name) => client.delete(`/loadbalancers/${seg(name)}`));
    });

  const backend = new Command('backend').description("a load balancer's backends");
  backend
    .command('add')
    .description('add a backend; it takes new connections at once (after its first probes fail it is taken out again)')
    .argument('<lb>', 'load balancer name or id')
    .argument('<backend>', 'ENDPOINT[:PORT], or a remote overlay endpoint IP[:PORT]')
    .addOption(leafSocketOption())
    .action(async (name: string, b: string, _opts: object, command: Command) => {
      await clientOf(command).post<LoadBalancer>(`/loadbalancers/${seg(name)}/backends`, { backend: b });
      printLine(b);
    });
  backend
    .command('rm')
    .alias('remove')
    .description('remove a backend: its established connections are balanced again (and end), new ones go elsewhere')
    .argument('<lb>', 'load balancer name or id')
    .argument('<backend>', 'the backend as it was added, its endpoint name, or IP:PORT')
    .addOption(leafSocketOption())
    .action(async (name: string, b: string, _opts: object, command: Command) => {
      await clientOf(command).delete(`/loadbalancers/${seg(name)}/backends/${seg(b)}`);
      printLine(b);
    });
  backend
    .command('drain')
    .description('drain a backend: no new connections; established ones finish (--undo takes new ones again)')
    .argument('<lb>', 'load balancer name or id')
    .argument('<backend>', 'the backend as it was added, its endpoint name, or IP:PORT')
    .option('--undo', 'take new connections again')
    .addOption(leafSocketOption())
    .action(async (name: string, b: string, opts: { undo?: boolean }, command: Command) => {
      const path = `/loadbalancers/${seg(name)}/backends/${seg(b)}/drain`;
      if (opts.undo) await clientOf(command).delete(path);
      else await clientOf(command).post(path, {});
      printLine(b);
    });
  lb.addCommand(backend);
  return lb;
}
