/**
 * Pure formatting and parsing helpers of the CLI: tables, stats, exit codes,
 * names. Nothing here does I/O, so test/unit/cli-args.test.ts covers it.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:os';
import type { Endpoint, NatNetworkState, Network, OverlayNetworkState, PortMapping, PortStats, StatsResponse, SwitchStats } from '../service/api-types.js';
import { CliError } from './errors.js';

/** Columns left-aligned, two spaces apart, like docker's listings; no trailing spaces. */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    widths
      .map((w, i) => (cells[i] ?? '').padEnd(w))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function formatNetworks(networks: readonly Network[]): string {
  const rows = networks.map((n) => [n.name, n.driver, n.subnet, n.gateway ?? '-', String(n.endpoints?.length ?? 0)]);
  return formatTable(['NAME', 'DRIVER', 'SUBNET', 'GATEWAY', 'ENDPOINTS'], rows);
}

/** One row per endpoint; a PORTS column (published ports, as docker ps shows them) when any endpoint publishes. */
export function formatEndpoints(endpoints: readonly Endpoint[]): string {
  const withPorts = endpoints.some((e) => e.publish?.length);
  const rows = endpoints.map((e) => {
    // A controller's endpoint has no MAC until its host made it.
    // A VM's endpoint has no namespace or interface: its socket says where it is.
    const [netns, ifname] = e.vhostUser === undefined ? [e.netns, e.ifname] : [`vhost-user:${e.vhostUser.socket}`, '-'];
    const row = [e.id, e.name, e.network, netns, ifname, `${e.ip}/${e.prefixLength}`, (e.mac as string | undefined) ?? '-'];
    if (withPorts) row.push(e.publish?.map(formatPublish).join(', ') || '-');
    row.push(e.state === 'down' ? `down: ${e.stateReason ?? 'no reason given'}` : 'up');
    return row;
  });
  return formatTable(['ID', 'NAME', 'NETWORK', 'NETNS', 'IFNAME', 'IP', 'MAC', ...(withPorts ? ['PORTS'] : []), 'STATE'], rows);
}

/** "0", or the total followed by the reasons that happened: "3 (runt=1, txFailed=2)". */
export function formatDrops(drops: Readonly<Record<string, number>>): string {
  const nonzero = Object.entries(drops).filter(([, n]) => n > 0);
  const total = nonzero.reduce((sum, [, n]) => sum + n, 0);
  return nonzero.length === 0 ? '0' : `${total} (${nonzero.map(([reason, n]) => `${reason}=${n}`).join(', ')})`;
}

export function formatPortStats(ports: readonly PortStats[]): string {
  const rows = ports.map((p) => [
    p.endpoint,
    p.network,
    p.netns === '' ? p.name : `${p.netns}/${p.ifname}`,
    String(p.rxFrames),
    String(p.rxBytes),
    String(p.txFrames),
    String(p.txBytes),
    formatDrops(p.drops),
  ]);
  return formatTable(['ENDPOINT', 'NETWORK', 'NETNS/IF', 'RX-FRAMES', 'RX-BYTES', 'TX-FRAMES', 'TX-BYTES', 'DROPS'], rows);
}

/** "MAC table: entries 3/8192, learned 5, moved 0, ..." then the switch-wide counters. */
export function formatSwitchStats(sw: SwitchStats): string {
  const { entries, maxEntries, ...rest } = sw.macTable;
  const parts = entries === undefined ? [] : [`entries ${entries}${maxEntries === undefined ? '' : `/${maxEntries}`}`];
  parts.push(...Object.entries(rest).map(([name, n]) => `${name} ${n}`));
  const lines = [`MAC table: ${parts.join(', ')}`, `switch: ports ${sw.ports ?? 0}, batches ${sw.batches}`];
  const v = sw.vfp;
  lines.push(
    `flows: ${v.flows}/${v.flowCapacity} cached, created ${v.flowsCreated}, re-evaluated ${v.flowsRevalidated}, expired ${v.flowsExpired}, slow path ${v.slowPathRuns}, uncached ${v.flowTableFull}`,
    `connections: ${v.connections.live} live, created ${v.connections.created}, expired ${v.connections.expired}, refused ${v.connections.refused}`,
  );
  return lines.join('\n');
}

export function formatStats(stats: StatsResponse): string {
  const uplinks = (stats.uplinks ?? []).map((u) => [u.fabric ? `${u.interface} (fabric)` : u.vlan === undefined ? u.interface : `${u.interface}.${u.vlan}`, u.network, String(u.rxFrames), String(u.rxBytes), String(u.txFrames), String(u.txBytes), u.down ? `down: ${u.down}` : formatDrops(u.drops)]);
  const uplinkTable = uplinks.length > 0 ? `\n\n${formatTable(['UPLINK', 'NETWORK', 'RX-FRAMES', 'RX-BYTES', 'TX-FRAMES', 'TX-BYTES', 'DROPS'], uplinks)}` : '';
  return `${formatPortStats(stats.ports)}${uplinkTable}\n\n${formatSwitchStats(stats.switch)}`;
}

/** The shell's convention for a child's end: its exit code, or 128 + the number of the signal that killed it. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const number = signal === null ? undefined : constants.signals[signal];
  return number === undefined ? 1 : 128 + number;
}

/** A compartment name for `vsw run` without --name: vsw- and 8 random hex digits. */
export function randomCompartmentName(): string {
  return `vsw-${randomBytes(4).toString('hex')}`;
}


/**
 * `-p` as docker writes it: HOSTPORT:CONTAINERPORT, IP:HOSTPORT:CONTAINERPORT,
 * or with the host port left out (CONTAINERPORT, IP::CONTAINERPORT) for one the
 * daemon picks from the ephemeral range; optionally followed by /tcp or /udp
 * (default tcp). Port ranges are checked by the daemon, which knows what else
 * is published.
 */
export function parsePublish(text: string): PortMapping {
  const m = /^(?:(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d*):)?(\d+)(?:\/(tcp|udp))?$/.exec(text);
  if (!m) {
    throw new CliError(
      `-p ${text} is not a port mapping: write HOSTPORT:CONTAINERPORT, IP:HOSTPORT:CONTAINERPORT, CONTAINERPORT or IP::CONTAINERPORT for a host port vsw picks, and /udp for UDP (e.g. -p 8080:80, -p 80 or -p 127.0.0.1:5353:53/udp).`,
    );
  }
  const hostText = m[2] ?? '';
  for (const port of [hostText, m[3]]) {
    if (port.length > 5) throw new CliError(`port ${port} in -p ${text} is out of range: ports are 1 to 65535.`);
  }
  if (hostText === '0') throw new CliError(`host port 0 in -p ${text} is out of range: leave the host port out (-p ${m[3]}) to have vsw pick one.`);
  const mapping: PortMapping = { protocol: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp', hostPort: hostText === '' ? 0 : Number(hostText), containerPort: Number(m[3]) };
  if (m[1] !== undefined) mapping.hostIp = m[1];
  return mapping;
}

/** commander collector for a repeatable -p. */
export function collectPublish(text: string, previous: PortMapping[] = []): PortMapping[] {
  return [...previous, parsePublish(text)];
}

export function formatPublish(m: PortMapping): string {
  return `${m.hostIp && m.hostIp !== '0.0.0.0' ? `${m.hostIp}:` : ''}${m.hostPort}->${m.containerPort}/${m.protocol}`;
}

/** Per nat network: a summary line, its published ports, then the live translations as a table. */
export function formatNat(states: readonly NatNetworkState[]): string {
  const out: string[] = [];
  for (const s of states) {
    const c = s.counters;
    out.push(`${s.network}: external ${s.externalIp}, ${c.active} active, ${c.created} created, ${c.expired} expired, ${c.refused} refused (pool ${c.poolSize} ports per protocol)`);
    const h = s.hostPort;
    out.push(`  host interface ${h.ifname}: rx ${h.rxFrames} frames, tx ${h.txFrames} frames, drops ${formatDrops(h.drops)}`);
    for (const p of s.published) out.push(`  published ${p.external}/${p.protocol} -> ${p.target}${p.endpoint ? ` (${p.endpoint})` : ''}`);
  }
  const rows = states.flatMap((s) => (s.translations ?? []).map((t) => [s.network, t.protocol, t.inside, t.external, t.remote, t.endpoint ?? '-', t.state, String(t.idleSeconds)]));
  out.push('', formatTable(['NETWORK', 'PROTO', 'INSIDE', 'EXTERNAL', 'REMOTE', 'ENDPOINT', 'STATE', 'IDLE'], rows));
  return out.join('\n');
}

/** A whole-number option (--vni 4096): the daemon checks the range, the CLI only that it is a number. */
export function parseWholeNumber(text: string, option: string): number {
  if (!/^\d{1,10}$/.test(text)) throw new CliError(`${option} ${text} is not a whole number: write digits only, such as ${option} 4096.`);
  return Number(text);
}

/** commander collector for a repeatable option. */
export function collectValues(text: string, previous: string[] = []): string[] {
  return [...previous, text];
}

export function formatOverlay(states: readonly OverlayNetworkState[]): string {
  const out: string[] = [];
  for (const s of states) {
    const t = s.counters.tunnel;
    const u = s.counters.underlay;
    out.push(`${s.network}: VNI ${s.vni}, VTEP ${s.vtep}:${s.vxlanPort}, MTU ${s.mtu}, peers ${s.peers.join(', ') || '(none)'}`);
    out.push(`  tunnel: ${t.framesOut} frames out (${t.segmented} super-frames cut into ${t.segments} segments, ${t.flooded} flooded as ${t.replicated} datagrams), ${t.framesIn} frames in, ARP answered locally ${t.arpSuppressed}, too big ${t.tooBig}, not from a peer ${t.notPeer}, drops ${formatDrops(t.drops)}`);
    out.push(`  underlay socket: ${u.datagramsOut} datagrams out (${u.sendFailed} refused), ${u.datagramsIn} in, drops ${formatDrops(u.drops)}`);
  }
  const rows = states.flatMap((s) => s.vteps.map((e) => [s.network, e.mac, e.vtep, e.kind, e.ageSeconds === null ? '-' : String(e.ageSeconds), s.arp.filter((a) => a.mac === e.mac).map((a) => a.ip).join(',') || '-']));
  out.push('', formatTable(['NETWORK', 'MAC', 'VTEP', 'KIND', 'AGE', 'IP'], rows));
  return out.join('\n');
}
