/**
 * `vsw policy ...`, `vsw flows`, `vsw trace`: the VFP operator tools. Every
 * command is one API call; the daemon validates, so the CLI only shapes the
 * request and prints the answer (tables for people, --json for scripts).
 */
import { readFile } from 'node:fs/promises';
import { Argument, Command, Option } from 'commander';
import type {
  AclRule,
  AddAclRuleRequest,
  EndpointPolicy,
  FlowsResponse,
  PolicyMatch,
  PutGroupRequest,
  PutLayerRequest,
  QosPolicy,
  SpoofGuardPolicy,
  TraceRequest,
  TraceResponse,
} from '../../service/api-types.js';
import { seg } from '../client.js';
import { CliError } from '../errors.js';
import { formatTable } from '../format.js';
import { clientOf, leafSocketOption, printJson, printLine } from './common.js';

interface AclAddOptions {
  action: string;
  priority: string;
  direction?: string;
  terminating?: boolean;
  layer?: string;
  group?: string;
  protocol?: string;
  srcPrefix?: string;
  dstPrefix?: string;
  srcPorts?: string;
  dstPorts?: string;
  icmpType?: string;
  srcMac?: string;
  dstMac?: string;
  etherType?: string;
  vlan?: string;
  rewriteSrcMac?: string;
  rewriteDstMac?: string;
  rewriteSrcIp?: string;
  rewriteDstIp?: string;
  rewriteSrcPort?: string;
  rewriteDstPort?: string;
  meterRate?: string;
  meterBurst?: string;
  description?: string;
  id?: string;
}

/** A number where the API wants one; left as text otherwise, so the daemon's sentence names what is wrong. */
function num(text: string | undefined): number | string | undefined {
  if (text === undefined) return undefined;
  return /^-?\d+$/.test(text) ? Number(text) : text;
}

function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

export function aclRequest(o: AclAddOptions): AddAclRuleRequest {
  const match: PolicyMatch = defined({
    protocol: o.protocol,
    srcPrefix: o.srcPrefix,
    dstPrefix: o.dstPrefix,
    srcPorts: o.srcPorts,
    dstPorts: o.dstPorts,
    icmpType: num(o.icmpType) as number | undefined,
    srcMac: o.srcMac,
    dstMac: o.dstMac,
    etherType: o.etherType,
    vlan: num(o.vlan) as number | undefined,
  });
  const rewrite = defined({
    srcMac: o.rewriteSrcMac,
    dstMac: o.rewriteDstMac,
    srcIp: o.rewriteSrcIp,
    dstIp: o.rewriteDstIp,
    srcPort: num(o.rewriteSrcPort) as number | undefined,
    dstPort: num(o.rewriteDstPort) as number | undefined,
  });
  const body = defined({
    id: o.id,
    priority: num(o.priority) as number,
    action: o.action as AddAclRuleRequest['action'],
    direction: o.direction as AddAclRuleRequest['direction'],
    terminating: o.terminating,
    layer: o.layer,
    group: o.group,
    description: o.description,
    match: Object.keys(match).length > 0 ? match : undefined,
    rewrite: Object.keys(rewrite).length > 0 ? rewrite : undefined,
    meter: o.meterRate !== undefined ? defined({ rate: o.meterRate, burst: o.meterBurst }) : undefined,
  });
  return body;
}

function describeMatch(m: PolicyMatch | undefined): string {
  if (!m || Object.keys(m).length === 0) return 'any';
  return Object.entries(m)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');
}

export function formatAcl(rules: readonly AclRule[]): string {
  const rows = rules.map((r) => [r.id, r.layer, r.group, String(r.priority), r.direction ?? 'both', r.action, describeMatch(r.match), String(r.hits)]);
  return formatTable(['ID', 'LAYER', 'GROUP', 'PRIORITY', 'DIRECTION', 'ACTION', 'MATCH', 'FLOWS'], rows);
}

export function formatFlows(res: FlowsResponse): string {
  const rows = res.flows.map((f) => [
    f.endpoint,
    f.egress ?? '-',
    f.action === 'drop' ? `drop (${f.dropReason})` : 'forward',
    f.flow,
    String(f.packets),
    String(f.bytes),
    `${f.ageSeconds}s`,
    `${f.idleSeconds}s`,
  ]);
  const s = res.stats;
  const summary = `${s.flows} cached flows of ${s.flowCapacity}; ${s.connections.live} connections; created ${s.flowsCreated}, re-evaluated ${s.flowsRevalidated}, expired ${s.flowsExpired}, uncached (table full) ${s.flowTableFull}; connections refused at the bound ${s.connections.refused}`;
  return `${formatTable(['FROM', 'TO', 'ACTION', 'FLOW', 'PACKETS', 'BYTES', 'AGE', 'IDLE'], rows)}\n\n${summary}`;
}

export function formatTrace(t: TraceResponse): string {
  const lines = [`packet: ${t.packet}`];
  for (const s of t.steps) {
    const where = [s.endpoint, s.direction].filter(Boolean).join(' ');
    const what = [s.layer && `layer ${s.layer}`, s.group && `group ${s.group}`, s.rule && `rule ${s.rule}`].filter(Boolean).join(', ');
    lines.push(`  ${where ? `[${where}] ` : ''}${what ? `${what}: ` : ''}${s.action}${s.detail ? ` (${s.detail})` : ''}`);
  }
  if (t.rewrite) lines.push(`rewrite: ${Object.entries(t.rewrite).map(([k, v]) => `${k} ${String(v)}`).join(', ')}`);
  lines.push(t.verdict === 'allow' ? `result: allow, egress ${t.egress ?? '-'}` : `result: block (${t.dropReason})`);
  return lines.join('\n');
}

function formatPolicy(p: EndpointPolicy): string {
  const lines = [`endpoint ${p.endpoint}`];
  lines.push(`spoof guard: ${p.spoofGuard.enabled ? 'on' : 'off'}${p.spoofGuard.allowedIps?.length ? ` (also allowed: ${p.spoofGuard.allowedIps.join(', ')})` : ''}`);
  lines.push(`egress cap: ${p.qos ? `${p.qos.maxEgress} (burst ${p.qos.burst})` : 'none'}`);
  for (const l of [...p.layers].sort((a, b) => a.priority - b.priority)) {
    lines.push(`layer ${l.name} (priority ${l.priority}, default in ${l.defaultIn}, out ${l.defaultOut})`);
    for (const g of [...l.groups].sort((a, b) => a.priority - b.priority)) {
      lines.push(`  group ${g.name} (priority ${g.priority}${g.match ? `, when ${describeMatch(g.match)}` : ''}): ${g.rules.length} rules`);
      for (const r of g.rules) lines.push(`    ${r.id} priority ${r.priority} ${r.direction ?? 'both'} ${r.action} ${describeMatch(r.match)}`);
    }
  }
  return lines.join('\n');
}

const ep = (id: string) => `/endpoints/${seg(id)}`;

function aclCommand(): Command {
  const acl = new Command('acl').description('ACL rules of an endpoint');
  acl
    .command('add')
    .description('add a rule to a layer and group of the endpoint (both are created as needed)')
    .argument('<endpoint>', 'endpoint id or name')
    .addOption(new Option('--action <action>', 'what a match does').choices(['allow', 'block', 'count', 'rewrite', 'meter']).makeOptionMandatory())
    .requiredOption('--priority <n>', '0-65535; lower numbers are looked at first')
    .addOption(new Option('--direction <dir>', 'in: to the endpoint, out: from it').choices(['in', 'out', 'both']))
    .option('--terminating', 'stop the layer at this rule (default for allow and block)')
    .option('--no-terminating', 'go on to the next group after this rule')
    .option('--layer <name>', 'layer (default acl)')
    .option('--group <name>', 'group within the layer (default "default")')
    .option('--id <id>', 'rule id (default: assigned)')
    .option('--protocol <p>', 'tcp, udp, icmp, icmpv6 or a number')
    .option('--src-prefix <cidr>', 'source IPv4/IPv6 prefix')
    .option('--dst-prefix <cidr>', 'destination IPv4/IPv6 prefix')
    .option('--src-ports <range>', 'source port or range, e.g. 1024-65535 (tcp/udp)')
    .option('--dst-ports <range>', 'destination port or range, e.g. 80 (tcp/udp)')
    .option('--icmp-type <n>', 'ICMP type (icmp/icmpv6)')
    .option('--src-mac <mac>', 'source MAC')
    .option('--dst-mac <mac>', 'destination MAC')
    .option('--ether-type <t>', 'ipv4, ipv6, arp or a number')
    .option('--vlan <id>', 'VLAN id; 0 means untagged')
    .option('--rewrite-src-mac <mac>')
    .option('--rewrite-dst-mac <mac>')
    .option('--rewrite-src-ip <ip>')
    .option('--rewrite-dst-ip <ip>')
    .option('--rewrite-src-port <port>')
    .option('--rewrite-dst-port <port>')
    .option('--meter-rate <rate>', 'for --action meter: e.g. 10mbit')
    .option('--meter-burst <size>', 'for --action meter: e.g. 64kb')
    .option('--description <text>')
    .option('--json', 'print the rule as JSON')
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExamples:\n  vsw policy acl add web --action block --direction in --protocol tcp --dst-ports 80 --priority 100\n  vsw policy acl add web --action allow --direction out --priority 200')
    .action(async (endpoint: string, opts: AclAddOptions & { json?: boolean }, command: Command) => {
      const rule = await clientOf(command).post<AclRule>(`${ep(endpoint)}/acl`, aclRequest(opts));
      if (opts.json) printJson(rule);
      else printLine(rule.id);
    });
  acl
    .command('ls')
    .description('list the rules of an endpoint with how many flows matched each')
    .argument('<endpoint>', 'endpoint id or name')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, opts: { json?: boolean }, command: Command) => {
      const rules = await clientOf(command).get<AclRule[]>(`${ep(endpoint)}/acl`);
      if (opts.json) printJson(rules);
      else printLine(formatAcl(rules));
    });
  acl
    .command('rm')
    .description('remove rules by id')
    .argument('<endpoint>', 'endpoint id or name')
    .argument('<rules...>', 'rule ids')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, rules: string[], _opts: object, command: Command) => {
      const client = clientOf(command);
      for (const id of rules) {
        await client.delete(`${ep(endpoint)}/acl/${seg(id)}`);
        printLine(id);
      }
    });
  return acl;
}

function layerCommand(): Command {
  const layer = new Command('layer').description('layers of an endpoint (outbound top-down by priority, inbound bottom-up)');
  layer
    .command('set')
    .description('create or change a layer')
    .argument('<endpoint>', 'endpoint id or name')
    .argument('<layer>', 'layer name')
    .option('--priority <n>', 'position: lower is higher in the stack')
    .addOption(new Option('--default-in <verdict>', 'for inbound IP traffic no rule decided').choices(['allow', 'block']))
    .addOption(new Option('--default-out <verdict>', 'for outbound IP traffic no rule decided').choices(['allow', 'block']))
    .addOption(leafSocketOption())
    .addHelpText('after', '\nExample (outbound only, replies still come in):\n  vsw policy layer set web acl --default-in block')
    .action(async (endpoint: string, name: string, opts: { priority?: string; defaultIn?: 'allow' | 'block'; defaultOut?: 'allow' | 'block' }, command: Command) => {
      const body: PutLayerRequest = defined({ priority: num(opts.priority) as number | undefined, defaultIn: opts.defaultIn, defaultOut: opts.defaultOut });
      await clientOf(command).put(`${ep(endpoint)}/layers/${seg(name)}`, body);
      printLine(name);
    });
  layer
    .command('rm')
    .description('remove a layer with its groups')
    .argument('<endpoint>', 'endpoint id or name')
    .argument('<layer>', 'layer name')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, name: string, _opts: object, command: Command) => {
      await clientOf(command).delete(`${ep(endpoint)}/layers/${seg(name)}`);
      printLine(name);
    });
  return layer;
}

function groupCommand(): Command {
  const group = new Command('group').description('groups of a layer, each replaced as a whole');
  group
    .command('set')
    .description('replace a group at once with the rules in a JSON file ({"priority": 100, "match": {...}, "rules": [...]})')
    .argument('<endpoint>', 'endpoint id or name')
    .argument('<layer>', 'layer name')
    .argument('<group>', 'group name')
    .requiredOption('--file <path>', 'JSON file with the group, - for stdin')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, layer: string, name: string, opts: { file: string }, command: Command) => {
      const text = opts.file === '-' ? await readStdin() : await readFile(opts.file, 'utf8').catch((err: NodeJS.ErrnoException) => {
        throw new CliError(`cannot read ${opts.file} (${err.code ?? err.message}): pass an existing JSON file.`);
      });
      let body: PutGroupRequest;
      try {
        body = JSON.parse(text) as PutGroupRequest;
      } catch {
        throw new CliError(`${opts.file} is not valid JSON: write {"priority": 100, "rules": [...]}.`);
      }
      await clientOf(command).put(`${ep(endpoint)}/layers/${seg(layer)}/groups/${seg(name)}`, body);
      printLine(name);
    });
  group
    .command('rm')
    .description('remove a group')
    .argument('<endpoint>', 'endpoint id or name')
    .argument('<layer>', 'layer name')
    .argument('<group>', 'group name')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, layer: string, name: string, _opts: object, command: Command) => {
      await clientOf(command).delete(`${ep(endpoint)}/layers/${seg(layer)}/groups/${seg(name)}`);
      printLine(name);
    });
  return group;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function qosCommand(): Command {
  const qos = new Command('qos').description("caps on an endpoint's egress (what it sends)");
  qos
    .command('set')
    .description('cap the rate the endpoint may send at (token bucket; over the cap its interface is read more slowly)')
    .argument('<endpoint>', 'endpoint id or name')
    .requiredOption('--max-egress <rate>', 'e.g. 100mbit, 1gbit')
    .option('--burst <size>', 'bucket size, e.g. 1mb (default: 10 ms at the rate, at least 64kb)')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, opts: { maxEgress: string; burst?: string }, command: Command) => {
      const res = await clientOf(command).put<QosPolicy>(`${ep(endpoint)}/qos`, defined({ maxEgress: opts.maxEgress, burst: opts.burst }));
      printLine(`${endpoint}: max egress ${res.maxEgress}`);
    });
  qos
    .command('rm')
    .description('remove the cap')
    .argument('<endpoint>', 'endpoint id or name')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, _opts: object, command: Command) => {
      await clientOf(command).delete(`${ep(endpoint)}/qos`);
      printLine(endpoint);
    });
  return qos;
}

function spoofGuardCommand(): Command {
  return new Command('spoof-guard')
    .description('whether the endpoint may send only from its own MAC and IP (on by default)')
    .argument('<endpoint>', 'endpoint id or name')
    .addArgument(new Argument('<state>', 'on or off').choices(['on', 'off']))
    .option('--allow-ip <ip...>', 'further source addresses the endpoint may use')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, state: string, opts: { allowIp?: string[] }, command: Command) => {
      if (state !== 'on' && state !== 'off') throw new CliError(`"${state}" is not a spoof guard state: write on or off.`);
      const body: SpoofGuardPolicy = defined({ enabled: state === 'on', allowedIps: opts.allowIp });
      await clientOf(command).put(`${ep(endpoint)}/spoof-guard`, body);
      printLine(`${endpoint}: spoof guard ${state}`);
    });
}

export function policyCommand(): Command {
  const policy = new Command('policy').description('VFP policy of endpoints: ACL rules, layers, groups, QoS, spoof guard');
  policy
    .command('show')
    .description("an endpoint's whole policy")
    .argument('<endpoint>', 'endpoint id or name')
    .option('--json', 'print JSON')
    .addOption(leafSocketOption())
    .action(async (endpoint: string, opts: { json?: boolean }, command: Command) => {
      const p = await clientOf(command).get<EndpointPolicy>(`${ep(endpoint)}/policy`);
      if (opts.json) printJson(p);
      else printLine(formatPolicy(p));
    });
  policy.addCommand(aclCommand());
  policy.addCommand(layerCommand());
  policy.addCommand(groupCommand());
  policy.addCommand(qosCommand());
  policy.addCommand(spoofGuardCommand());
  return policy;
}

export function flowsCommand(): Command {
  return new Command('flows')
    .description('dump the unified flow table: cached flows with packets, bytes and age')
    .option('--endpoint <endpoint>', 'only flows entering or leaving this endpoint')
    .option('--json', 'print JSON instead of a table')
    .addOption(leafSocketOption())
    .action(async (opts: { endpoint?: string; json?: boolean }, command: Command) => {
      const query = opts.endpoint === undefined ? '' : `?endpoint=${seg(opts.endpoint)}`;
      const res = await clientOf(command).get<FlowsResponse>(`/flows${query}`);
      if (opts.json) printJson(res);
      else printLine(formatFlows(res));
    });
}

export function traceCommand(): Command {
  return new Command('trace')
    .description('show how a packet would go through the layers, groups and rules, without sending it')
    .requiredOption('--endpoint <endpoint>', 'endpoint the packet leaves (--out) or reaches (--in)')
    .option('--in', 'the packet is delivered to the endpoint')
    .option('--out', 'the packet is sent by the endpoint')
    .argument('<packet>', 'e.g. "tcp 10.88.0.2:1234 > 10.88.0.3:80 syn", "udp A:P > B:P", "icmp A > B"')
    .option('--json', 'print JSON')
    .addOption(leafSocketOption())
    .action(async (packet: string, opts: { endpoint: string; in?: boolean; out?: boolean; json?: boolean }, command: Command) => {
      if (opts.in === opts.out) throw new CliError('say which way the packet goes: pass exactly one of --in and --out.');
      const body: TraceRequest = { endpoint: opts.endpoint, direction: opts.in ? 'in' : 'out', packet };
      const res = await clientOf(command).post<TraceResponse>('/trace', body);
      if (opts.json) printJson(res);
      else printLine(formatTrace(res));
    });
}
