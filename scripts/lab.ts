/**
 * `scripts/lab`: a multi-host vsw lab on one machine (docs/LAB.md).
 *
 *   scripts/lab up [--hosts N] [--containers M]   build it: hosts are namespaces on an underlay bridge,
 *                                                  one vsw daemon each, an overlay network, containers
 *   scripts/lab up --lan [--lan-mode l2bridge]     and a physical LAN (bridge, dnsmasq, router, outside
 *                                                  host) with a transparent (or l2bridge) network on every
 *                                                  host's uplink
 *   scripts/lab up --lan-mode l2tunnel             the same LAN reached through a fabric host (its own
 *                                                  daemon, an l2bridge network with a fabric port) from
 *                                                  l2tunnel networks on the hosts' uplinks
 *   scripts/lab up --controller                    the same overlay made through the network controller:
 *                                                  a 3-member etcd cluster and `vsw controller` in the
 *                                                  underlay namespace, the hosts' daemons its agents
 *   scripts/lab iperf [--from h1-c1] [--to h2-c1]  iperf3 between two containers
 *   scripts/lab status                             what runs, what answers
 *   scripts/lab down                               remove everything
 *
 * The work is in scripts/lab-lib.ts, which the bench's overlay scenario
 * shares; this file is options, output and exit codes. Every failure is one
 * sentence on stderr and a non-zero exit.
 */
import { Command, Option } from 'commander';
import path from 'node:path';

import { BenchError, Interrupted, interrupt, intOption, liveChildren } from './bench-lib.js';
import {
  CLI,
  LAB_DEFAULTS,
  LAN_MODE_LIST,
  LIMITS,
  checkPrefix,
  controlStatus,
  findContainer,
  labDown,
  labPreflight,
  labStatus,
  labUp,
  lanStatus,
  pingOnce,
  readLab,
  requireLab,
  runIperf,
  type LabDescription,
  type LabDriver,
  type LanMode,
} from './lab-lib.js';

const progress = (line: string): void => {
  process.stderr.write(`lab: ${line}\n`);
};

/** The CLI as a user types it from here: relative to the working directory when that is shorter. */
function cliPath(): string {
  const rel = path.relative(process.cwd(), CLI);
  return rel.length < CLI.length && !rel.startsWith('..') ? rel : CLI;
}

const labCmd = (sub: string, prefix: string): string => `scripts/lab ${sub}${prefix === LAB_DEFAULTS.prefix ? '' : ` --prefix ${prefix}`}`;

function fmtBps(bps: number): string {
  return bps >= 1e9 ? `${(bps / 1e9).toFixed(2)} Gbit/s` : `${(bps / 1e6).toFixed(1)} Mbit/s`;
}

// ---------------------------------------------------------------- up

function summary(desc: LabDescription, check: string | null): string {
  const vswCmd = `node ${cliPath()}`;
  const lines: string[] = [];
  const n = desc.network;
  lines.push(`lab ${desc.prefix}: ${desc.hosts.length} hosts, ${n.driver} network ${n.name} ${n.subnet}${n.vni !== null ? ` VNI ${n.vni}` : ''}`);
  lines.push(`underlay: bridge ${desc.underlay.bridge} in namespace ${desc.underlay.netns}, ${desc.underlay.subnet}, MTU ${desc.underlay.mtu}`);
  const ctl = desc.controller;
  if (ctl) {
    lines.push(`controller: vsw controller pid ${ctl.pid} in namespace ${ctl.netns}, socket ${ctl.socket}  log ${ctl.log}`);
    lines.push(`etcd: ${ctl.members.length} members in namespace ${ctl.netns} (clients on ${ctl.ip}, the bridge's address; peers on the namespace's loopback)`);
    for (const m of ctl.members) lines.push(`    ${m.name}  pid ${m.pid}  client ${m.clientUrl}  peer ${m.peerUrl}  data ${m.dataDir}`);
  }
  lines.push('');
  for (const h of desc.hosts) {
    lines.push(`${h.name}  namespace ${h.netns}  eth0 ${h.underlayIp}  daemon pid ${h.pid}${ctl ? ` (agent --host ${h.name})` : ''}`);
    lines.push(`    socket ${h.socket}  log ${h.log}`);
    for (const c of h.containers) {
      lines.push(`    ${c.id.padEnd(7)} namespace ${c.netns}  ${c.ifname} ${c.ip}/${c.prefixLength}  mtu ${c.mtu ?? '?'}  endpoint ${c.endpoint}`);
    }
  }
  const lan = desc.lan;
  if (lan) {
    lines.push('');
    lines.push(`LAN: bridge ${lan.bridge} in namespace ${lan.netns}, ${lan.subnet}, MTU ${lan.mtu}`);
    lines.push(`    DHCP: dnsmasq pid ${lan.dhcp.pid} on ${lan.dhcp.serverIp}, pool ${lan.dhcp.rangeStart}-${lan.dhcp.rangeEnd}, leases ${lan.dhcp.leaseFile}`);
    lines.push(`    router: namespace ${lan.router.netns}  ${lan.router.lanIp} on the LAN, ${lan.router.outsideIp} towards the outside host`);
    lines.push(`    outside host: namespace ${lan.outside.netns}  ${lan.outside.ip} (${lan.outside.subnet}), one hop behind the router`);
    const fab = lan.fabric;
    if (fab) {
      lines.push(`    fabric host: namespace ${fab.netns}  ${fab.uplink} ${fab.lanIp} (port ${fab.lanPort} of ${lan.bridge})  daemon pid ${fab.pid}`);
      lines.push(`        socket ${fab.socket}  log ${fab.log}`);
      lines.push(`        ${fab.network.driver} network ${fab.network.name} --uplink ${fab.uplink} --fabric ${fab.fabricIf} (port ${fab.tor.port} of ${fab.tor.bridge} in ${fab.tor.netns}, the top-of-rack switch)`);
      for (const a of fab.addresses) lines.push(`        fabric endpoint ${a.name.padEnd(7)} ${a.ip} at ${a.hostMac}  endpoint ${a.endpoint}`);
    }
    lines.push(`    ${lan.network.driver} network ${lan.network.name} on every host, gateway ${lan.network.gateway}:`);
    for (const u of lan.uplinks) {
      const c = lan.containers.find((x) => x.host === u.host);
      const port = fab ? `port ${u.bridgePort} of ${fab.tor.bridge} in ${fab.tor.netns}` : `port ${u.bridgePort} of ${lan.bridge}`;
      lines.push(`    ${u.host}  uplink ${u.ifname}${u.hostAddress ? ` ${u.hostAddress}` : ''} (${port})  --ip-range ${u.ipRange}` +
        (c ? `  ${c.id} namespace ${c.netns}  ${c.ifname} ${c.ip}/${c.prefixLength}  endpoint ${c.endpoint}` : ''));
    }
  }
  if (check) lines.push('', check);
  const [h1, h2] = desc.hosts;
  const a = h1.containers[0];
  const b = h2.containers[0];
  const cmds: [string, string][] = [];
  if (a && b) cmds.push([`ip netns exec ${a.netns} ping -c 3 ${b.ip}`, `${a.id} -> ${b.id}, across hosts`]);
  if (ctl) {
    const viaCtl = `${vswCmd} --controller ${ctl.socket}`;
    const extra = `${h1.netns}-c${h1.containers.length + 1}`;
    cmds.push([`${viaCtl} endpoint ls`, "the controller's endpoints, with each one's status on its host"]);
    cmds.push([`ip netns add ${extra} && ${viaCtl} endpoint create --network ${n.name} --host ${h1.name} --netns ${extra} --name ${h1.name}-c${h1.containers.length + 1}`, `one more container on ${h1.name}, through the controller`]);
    cmds.push([`ip netns exec ${ctl.netns} etcdctl --endpoints ${ctl.etcd} endpoint status -w table`, 'the etcd members, and which one leads']);
    cmds.push([`ip netns exec ${ctl.netns} etcdctl --endpoints ${ctl.etcd} get --prefix /vsw/ --keys-only`, "the controller's state"]);
  }
  cmds.push([`${vswCmd} --socket ${h1.socket} ${n.driver === 'overlay' ? 'overlay ls' : 'network ls'}`, `host ${h1.name}'s daemon`]);
  cmds.push([`${vswCmd} --socket ${h1.socket} endpoint ls`, '']);
  cmds.push([`ip netns exec ${h1.netns} tcpdump -ni eth0 udp port 4789`, `the underlay as host ${h1.name} sees it`]);
  const l = lan?.containers[0];
  if (lan && l) {
    cmds.push([`ip netns exec ${lan.outside.netns} ping -c 3 ${l.ip}`, `outside host -> ${l.id}, through the router and the LAN`]);
    cmds.push([labCmd(`iperf --from out --to ${l.id}`, desc.prefix), `iperf3 outside host -> ${l.id}`]);
    const macs = lan.network.driver === 'transparent' ? "the containers' own MACs" : lan.fabric ? "only the fabric host's MAC" : "only the hosts' MACs";
    cmds.push([`ip netns exec ${lan.netns} tcpdump -eni ${lan.bridge} not port 67`, `the LAN's frames, with ${macs}`]);
    cmds.push([`${vswCmd} --socket ${h1.socket} stats`, `the uplink's counters on host ${h1.name}`]);
    const fab = lan.fabric;
    const l2 = lan.containers[1];
    if (fab) {
      if (l2) cmds.push([`ip netns exec ${l.netns} ping -c 3 ${l2.ip}`, `${l.id} -> ${l2.id}, through the fabric host`]);
      cmds.push([`ip netns exec ${fab.tor.netns} tcpdump -eni ${fab.tor.bridge} icmp`, 'what the hosts send the fabric host, and back']);
      cmds.push([`${vswCmd} --socket ${fab.socket} network inspect ${fab.network.name}`, "the fabric host's stage counters (hairpinned: container to container)"]);
      cmds.push([`${vswCmd} --socket ${fab.socket} stats`, 'one row per container address, with its policy drops']);
      if (l2) cmds.push([`${vswCmd} --socket ${fab.socket} policy acl add ${l2.id} --action block --priority 10 --direction in --src-prefix ${l.ip}/32`, `${l2.id}'s policy, on the fabric host`]);
    }
    cmds.push([`cat ${lan.dhcp.leaseFile}`, "dnsmasq's leases"]);
  }
  cmds.push([labCmd('iperf', desc.prefix), `iperf3 ${a?.id ?? 'h1-c1'} -> ${b?.id ?? 'h2-c1'}`]);
  cmds.push([labCmd('status', desc.prefix), '']);
  cmds.push([labCmd('down', desc.prefix), 'remove everything']);
  // Aligned comments, but not to the longest lines (a policy command): those keep theirs two spaces off.
  const w = Math.max(...cmds.map(([c]) => c.length).filter((n) => n <= 100));
  lines.push('', 'try:', ...cmds.map(([c, why]) => (why ? `  ${c.padEnd(w)}  # ${why}` : `  ${c}`)));
  return lines.join('\n');
}

interface UpFlags {
  prefix: string;
  hosts?: string;
  containers?: string;
  subnet: string;
  vni?: string;
  networkName: string;
  underlayMtu?: string;
  driver: string;
  logLevel: string;
  lan?: boolean;
  lanMode?: string;
  controller?: boolean;
  json?: boolean;
}

async function up(f: UpFlags): Promise<void> {
  const opts = {
    prefix: checkPrefix(f.prefix),
    hosts: intOption('hosts', f.hosts, LAB_DEFAULTS.hosts, LIMITS.hosts.min, LIMITS.hosts.max),
    containers: intOption('containers', f.containers, LAB_DEFAULTS.containers, LIMITS.containers.min, LIMITS.containers.max),
    subnet: f.subnet,
    vni: intOption('vni', f.vni, LAB_DEFAULTS.vni, LIMITS.vni.min, LIMITS.vni.max),
    network: f.networkName,
    underlayMtu: intOption('underlay-mtu', f.underlayMtu, LAB_DEFAULTS.underlayMtu, LIMITS.underlayMtu.min, LIMITS.underlayMtu.max),
    driver: f.driver as LabDriver,
    logLevel: f.logLevel,
    // --lan-mode alone asks for the LAN too: it means nothing without one.
    lan: f.lan === true || f.lanMode !== undefined,
    lanMode: (f.lanMode ?? LAB_DEFAULTS.lanMode) as LanMode,
    controller: f.controller === true,
  };
  const desc = await labUp(opts, progress);
  // One ping across hosts: the lab works, or the summary says it does not (and the lab stays, to look at).
  const checks: string[] = [];
  const [a, b] = [desc.hosts[0].containers[0], desc.hosts[1].containers[0]];
  if (opts.driver === 'overlay' && a && b) {
    const rtt = await pingOnce(a.netns, b.ip, 5);
    checks.push(rtt !== null ? `check: ${a.id} -> ${b.id} ping answered in ${rtt} ms` : `check: ${a.id} -> ${b.id} ping got NO answer: look at the daemons' logs`);
  }
  // The LAN: every LAN container reaches the outside host through the router, and is reached from it.
  const lan = desc.lan;
  for (const c of lan?.containers ?? []) {
    for (const [from, to, ip] of [[c.netns, 'out', lan!.outside.ip], [lan!.outside.netns, c.id, c.ip]] as const) {
      const name = from === c.netns ? c.id : 'out';
      const rtt = await pingOnce(from, ip, 5);
      checks.push(rtt !== null ? `check: ${name} -> ${to} ping answered in ${rtt} ms` : `check: ${name} -> ${to} ping got NO answer: look at the daemons' logs and \`vsw stats\``);
    }
  }
  // l2tunnel: containers of different hosts reach each other, through the fabric host (each to the next, around).
  const lc = lan?.fabric ? lan.containers : [];
  for (let k = 0; lc.length > 1 && k < lc.length; k++) {
    const [from, to] = [lc[k], lc[(k + 1) % lc.length]];
    const rtt = await pingOnce(from.netns, to.ip, 5);
    checks.push(rtt !== null ? `check: ${from.id} -> ${to.id} ping answered in ${rtt} ms (through the fabric host)` : `check: ${from.id} -> ${to.id} ping got NO answer: look at the fabric host's \`vsw network inspect lan\` and \`vsw stats\``);
  }
  const check = checks.length ? checks.join('\n') : null;
  process.stdout.write(f.json ? JSON.stringify(desc, null, 2) + '\n' : summary(desc, check) + '\n');
}

// ---------------------------------------------------------------- down, status

async function down(f: { prefix: string }): Promise<void> {
  checkPrefix(f.prefix);
  await labPreflight();
  const r = await labDown(f.prefix, progress);
  if (r.namespaces.length === 0 && r.files.length === 0 && r.stopped + r.killed === 0) {
    process.stdout.write(`nothing to remove for prefix ${f.prefix}\n`);
    return;
  }
  const procs = r.stopped + r.killed;
  process.stdout.write(
    `removed lab ${f.prefix}: ${procs} process${procs === 1 ? '' : 'es'} stopped${r.killed ? ` (${r.killed} with SIGKILL)` : ''}, ` +
      `${r.namespaces.length} namespace${r.namespaces.length === 1 ? '' : 's'} deleted, ${r.files.length} file${r.files.length === 1 ? '' : 's'} removed\n`,
  );
}

async function status(f: { prefix: string; json?: boolean }): Promise<void> {
  checkPrefix(f.prefix);
  const desc = await readLab(f.prefix);
  if (!desc) {
    if (f.json) process.stdout.write('null\n');
    else process.stdout.write(`no lab with prefix ${f.prefix}\n`);
    return;
  }
  await labPreflight();
  const hosts = await labStatus(desc);
  const lan = await lanStatus(desc);
  const control = await controlStatus(desc);
  // The controller or a member down, no leader, or an object an agent could not apply.
  const failed = (s: { state: string } | null): boolean => s?.state === 'failed';
  const ctlBad =
    control !== null &&
    (!control.controller.answers ||
      control.etcd.some((m) => !m.running || !m.answers) ||
      !control.etcd.some((m) => m.leader) ||
      control.networks.some((n) => Object.values(n.status).some(failed)) ||
      control.endpoints.some((e) => failed(e.status)));
  if (f.json) {
    process.stdout.write(JSON.stringify({ lab: desc, status: hosts, lan, control }, null, 2) + '\n');
    if (ctlBad) process.exitCode = 1;
    return;
  }
  const lines = [`lab ${desc.prefix}${desc.complete ? '' : ' (NOT completely built: remove it with down)'}: ${desc.network.driver} network ${desc.network.name} ${desc.network.subnet}, built ${desc.created}`];
  const ctl = desc.controller;
  if (control && ctl) {
    const c = control.controller;
    const state = c.running ? (c.answers ? `answers, agents registered: ${c.hosts.join(', ') || 'none'}` : 'runs but does NOT answer') : 'NOT running';
    lines.push(`controller  pid ${ctl.pid}  ${state}  ${ctl.socket}`);
    for (const m of control.etcd) {
      const rec = ctl.members.find((x) => x.name === m.name)!;
      const st = !m.running ? 'NOT running' : !m.answers ? 'runs but does NOT answer' : `${m.leader ? 'leader' : 'follower'}, raft term ${m.raftTerm}, db ${((m.dbSize ?? 0) / 1024).toFixed(0)} KiB`;
      lines.push(`etcd ${m.name}     pid ${rec.pid}  ${m.clientUrl}  ${st}`);
    }
    if (!control.etcd.some((m) => m.leader)) lines.push('etcd: NO member says it leads (no quorum?)');
    const fmt = (s: { state: string; reason?: string } | null | undefined): string => (s ? `${s.state}${s.reason ? ` (${s.reason})` : ''}` : 'pending');
    for (const n of control.networks) lines.push(`network ${n.name}: ${Object.entries(n.status).map(([h, s]) => `${h} ${fmt(s)}`).join(', ')}`);
    for (const e of control.endpoints) lines.push(`    endpoint ${e.name.padEnd(8)} ${e.ip.padEnd(12)} on ${e.host}: ${fmt(e.status)}`);
  }
  for (const h of hosts) {
    const host = desc.hosts.find((x) => x.name === h.host)!;
    const daemon = h.daemon === 'running' ? (h.answers ? 'daemon answers' : 'daemon runs but does NOT answer') : 'daemon NOT running';
    lines.push(`${h.host}  ${host.underlayIp}  ${daemon}  ${host.socket}${h.netns ? '' : '  namespace MISSING'}`);
    for (const c of h.containers) {
      const cont = host.containers.find((x) => x.id === c.id)!;
      lines.push(`    ${c.id.padEnd(7)} ${cont.ip}${c.netns ? '' : '  namespace MISSING'}`);
    }
  }
  if (lan && desc.lan) {
    const missing = lan.namespaces.filter((n) => !n.exists).map((n) => n.netns);
    lines.push(
      `LAN ${desc.lan.subnet}  dnsmasq ${lan.dnsmasq === 'running' ? `runs (pid ${desc.lan.dhcp.pid})` : 'NOT running'}, ${lan.leases} lease${lan.leases === 1 ? '' : 's'} in ${desc.lan.dhcp.leaseFile}` +
        (missing.length ? `  namespace${missing.length > 1 ? 's' : ''} MISSING: ${missing.join(', ')}` : ''),
    );
    for (const c of desc.lan.containers) lines.push(`    ${c.id.padEnd(7)} ${c.ip}  ${desc.lan.network.driver} network ${desc.lan.network.name}`);
    const fab = desc.lan.fabric;
    if (fab && lan.fabric) {
      const daemon = lan.fabric.daemon === 'running' ? (lan.fabric.answers ? 'daemon answers' : 'daemon runs but does NOT answer') : 'daemon NOT running';
      lines.push(`fabric host ${fab.netns}  ${fab.lanIp}  ${daemon}  ${fab.socket}  (${fab.addresses.length} fabric endpoint${fab.addresses.length === 1 ? '' : 's'})`);
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  const bad =
    ctlBad ||
    hosts.some((h) => !h.answers || !h.netns || h.containers.some((c) => !c.netns)) ||
    (lan !== null && (lan.dnsmasq !== 'running' || lan.namespaces.some((n) => !n.exists) || (lan.fabric !== null && !lan.fabric.answers)));
  if (bad) process.exitCode = 1;
}

// ---------------------------------------------------------------- iperf

interface IperfFlags {
  prefix: string;
  from: string;
  to: string;
  time?: string;
  parallel?: string;
  udp?: boolean;
  len?: string;
  json?: boolean;
}

async function iperf(f: IperfFlags): Promise<void> {
  checkPrefix(f.prefix);
  const seconds = intOption('--time', f.time, 5, 1, 3600);
  const parallel = intOption('-P', f.parallel, 1, 1, 128);
  if (f.len !== undefined && !f.udp) throw new BenchError('--len sets the UDP datagram size: add --udp.');
  const len = intOption('--len', f.len, 64, 16, 65_000);
  await labPreflight([['iperf3', 'iperf3'], ['ss', 'iproute2']]);
  const desc = await requireLab(f.prefix);
  const from = findContainer(desc, f.from);
  const to = findContainer(desc, f.to);
  if (from === to) throw new BenchError(`--from and --to are both ${from.id}: pick two containers.`);
  const out = await runIperf({ clientNs: from.netns, serverNs: to.netns, serverIp: to.ip, seconds, parallel, udp: f.udp, len });
  if (f.json) {
    process.stdout.write(JSON.stringify({ from: from.id, to: to.id, tcp: out.tcp, udp: out.udp }, null, 2) + '\n');
    return;
  }
  const head = `${from.id} ${from.ip} -> ${to.id} ${to.ip}`;
  if (out.tcp) {
    const streams = `${parallel} stream${parallel > 1 ? 's' : ''}`;
    process.stdout.write(`${head}: TCP, ${streams}, ${seconds} s: ${fmtBps(out.tcp.bitsPerSecond)} received, ${out.tcp.retransmits ?? '?'} retransmits\n`);
  } else if (out.udp) {
    const u = out.udp;
    const bps = u.packetsPerSecond * len * 8;
    process.stdout.write(
      `${head}: UDP ${len} B, ${seconds} s: ${(u.packetsPerSecond / 1e3).toFixed(0)} kpps received (${fmtBps(bps)} of payload), ` +
        `${(u.sentPacketsPerSecond / 1e3).toFixed(0)} kpps sent, ${u.lostPercent.toFixed(1)}% lost\n`,
    );
  }
}

// ---------------------------------------------------------------- main

const prefixOption = (): Option => new Option('--prefix <name>', 'names of everything in the lab start with it').default(LAB_DEFAULTS.prefix);

function program(): Command {
  const p = new Command('scripts/lab')
    .description('a multi-host vsw lab on one machine: hosts are network namespaces joined by an underlay bridge, each runs a vsw daemon (docs/LAB.md)')
    .showHelpAfterError('(add --help for usage)');

  p.command('up')
    .description('build the lab: an underlay bridge, N host namespaces each running a vsw daemon, one overlay network on every host, containers')
    .option('--hosts <n>', `hosts, ${LIMITS.hosts.min} to ${LIMITS.hosts.max} (default ${LAB_DEFAULTS.hosts})`)
    .option('--containers <m>', `containers per host, ${LIMITS.containers.min} to ${LIMITS.containers.max} (default ${LAB_DEFAULTS.containers})`)
    .addOption(prefixOption())
    .option('--subnet <cidr>', 'subnet of the overlay network', LAB_DEFAULTS.subnet)
    .option('--vni <n>', `VXLAN network identifier (default ${LAB_DEFAULTS.vni})`)
    .option('--network-name <name>', 'name of the overlay network on every daemon', LAB_DEFAULTS.network)
    .option('--underlay-mtu <n>', `MTU of the underlay's links and bridge (default ${LAB_DEFAULTS.underlayMtu})`)
    .addOption(new Option('--driver <driver>', 'network driver (internal: a separate network per host, for trying the lab without overlay)').default(LAB_DEFAULTS.driver).hideHelp())
    .addOption(new Option('--log-level <level>', 'log level of the daemons').default(LAB_DEFAULTS.logLevel).hideHelp())
    .option('--lan', 'also a physical LAN: a bridge with dnsmasq (DHCP), a router with an outside host behind it, every host\'s uplink on it carrying a network "lan" (transparent; see --lan-mode) with one container')
    .option('--lan-mode <driver>', `the LAN network's driver, ${LAN_MODE_LIST} (default ${LAB_DEFAULTS.lanMode}; implies --lan); l2tunnel puts a fabric host with its own daemon between the hosts and the LAN`)
    .option('--controller', 'build the overlay through the network controller: a 3-member etcd cluster and `vsw controller` in the underlay namespace, every host\'s daemon an agent, the network and the containers\' endpoints made with `vsw --controller`')
    .option('--json', 'print the lab description (as stored in /run/vsw-lab/PREFIX.json) instead of the summary')
    .addHelpText('after', '\nExamples:\n  scripts/lab up --hosts 3 --containers 1\n  scripts/lab up --controller --hosts 3\n  scripts/lab up --lan\n  scripts/lab up --lan-mode l2bridge\n  scripts/lab up --lan-mode l2tunnel\n')
    .action(up);

  p.command('down')
    .description('stop the lab\'s daemons (and the controller and etcd; SIGTERM, SIGKILL after 5 s), delete its namespaces and state (etcd\'s data included); nothing to remove is not an error')
    .addOption(prefixOption())
    .action(down);

  p.command('iperf')
    .description('iperf3 from one container to another (server in --to, client in --from), and print the rate')
    .addOption(prefixOption())
    .option('--from <container>', 'client container, HOST-CONTAINER (with --lan also h1-l1, ..., and out, the outside host)', 'h1-c1')
    .option('--to <container>', 'server container, HOST-CONTAINER (or h1-l1, out)', 'h2-c1')
    .option('-t, --time <s>', 'seconds (default 5)')
    .option('-P, --parallel <n>', 'parallel TCP streams (default 1)')
    .option('-u, --udp', 'UDP at full rate instead of TCP')
    .option('-l, --len <bytes>', 'UDP datagram size (default 64)')
    .option('--json', 'print the parsed result as JSON')
    .addHelpText('after', '\nExamples:\n  scripts/lab iperf\n  scripts/lab iperf --from h1-c2 --to h2-c1 -P 4 --time 10\n  scripts/lab iperf --udp --len 64\n  scripts/lab iperf --from out --to h1-l1     # a lab built with --lan\n')
    .action(iperf);

  p.command('status')
    .description('whether each daemon (and the LAN\'s dnsmasq, the fabric host\'s daemon, the controller and the etcd members) runs and answers and each namespace exists (exit 1 if not); with --controller also which etcd member leads and each object\'s status per host')
    .addOption(prefixOption())
    .option('--json', 'print the lab description and status as JSON')
    .action(status);

  return p;
}

process.on('SIGINT', () => interrupt.abort());
process.on('SIGTERM', () => interrupt.abort());
process.on('exit', () => {
  // iperf3 servers a failed run left; never the daemons (they are detached and not tracked).
  for (const c of liveChildren) c.kill('SIGKILL');
});

try {
  await program().parseAsync(process.argv);
} catch (err) {
  if (err instanceof Interrupted) {
    process.stderr.write('lab: interrupted.\n');
    process.exitCode = 130;
  } else if (err instanceof BenchError) {
    process.stderr.write(`lab: ${err.message}\n`);
    process.exitCode = 1;
  } else {
    process.stderr.write(`lab: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}
