/**
 * `vsw daemon --metrics [ADDRESS:]PORT`: Prometheus metrics over HTTP
 * (GET /metrics), with prom-client. Opt-in, and on loopback unless an address
 * is given.
 *
 * The switch's counters live in the data plane (shared memory and the
 * worker); a scrape reads them once (one round trip per table, never the
 * translation or flow listings) and the metrics below report those values.
 * Counters that the data plane keeps are reported as Prometheus counters
 * (reset and set to the current value at each scrape: they only grow while
 * the daemon runs, and start from zero with a new daemon, as a process's own
 * counters do).
 */
import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { LoadBalancer, NatNetworkState, OverlayNetworkState, StatsResponse, VhostEndpointState } from './api-types.js';
import type { NetworkService } from './service.js';

export interface MetricsAddress {
  host: string;
  port: number;
}

/** "9483", "127.0.0.1:9483", "[::1]:9483" or "0.0.0.0:9483"; for anything else, the sentence that says so. */
export function parseMetricsAddress(text: string): MetricsAddress | string {
  const m = /^(?:(\[[0-9a-fA-F:]+\]|[0-9.]+|localhost):)?(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) return `--metrics ${text} is not an address to listen on: write PORT or ADDRESS:PORT, such as 127.0.0.1:9483.`;
  const host = m[1] === undefined ? '127.0.0.1' : m[1].replace(/^\[|\]$/g, '');
  return { host, port };
}

interface Scrape {
  stats: StatsResponse;
  nat: NatNetworkState[];
  overlay: OverlayNetworkState[];
  hostPorts: { port: string; network: string; portId: number; up: boolean }[];
  loadBalancers: LoadBalancer[];
  vms: { name: string; network: string; device: VhostEndpointState }[];
}

type MirrorArgs = [registry: Registry, name: string, help: string, labelNames: string[], values: (s: Scrape) => [Record<string, string>, number][], scrape: () => Scrape | undefined];

/**
 * A Prometheus counter or gauge whose values are kept elsewhere (the data
 * plane): set from the current scrape, never incremented here.
 */
function mirrored(kind: 'counter' | 'gauge', ...[registry, name, help, labelNames, values, scrape]: MirrorArgs): void {
  const fill = (metric: { reset(): void }, put: (labels: Record<string, string>, value: number) => void): void => {
    const s = scrape();
    metric.reset();
    if (s) for (const [labels, value] of values(s)) put(labels, value);
  };
  const config = { name, help, labelNames, registers: [registry] };
  if (kind === 'counter') {
    new Counter({
      ...config,
      collect() {
        fill(this, (labels, value) => this.inc(labels, value));
      },
    });
  } else {
    new Gauge({
      ...config,
      collect() {
        fill(this, (labels, value) => this.set(labels, value));
      },
    });
  }
}

const mirroredCounter = (...args: MirrorArgs): void => mirrored('counter', ...args);
const mirroredGauge = (...args: MirrorArgs): void => mirrored('gauge', ...args);

export class Metrics {
  readonly registry = new Registry();
  readonly apiLatency: Histogram<'method' | 'route' | 'status'>;
  readonly stateWrites: Histogram;
  private readonly stateBytes: Gauge;
  private current?: Scrape;
  private server?: Server;

  constructor(
    private readonly service: NetworkService,
    private readonly logger: Logger,
  ) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'vsw_' });
    this.apiLatency = new Histogram({
      name: 'vsw_api_request_duration_seconds',
      help: 'REST API requests by method, route and status: time to answer',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [r],
    });
    this.stateWrites = new Histogram({
      name: 'vsw_state_write_duration_seconds',
      help: 'Writes of state.json: temporary file, fsync, rename and fsync of the directory',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: [r],
    });
    this.stateBytes = new Gauge({ name: 'vsw_state_file_bytes', help: 'Size of the last state.json written', registers: [r] });

    const s = (): Scrape | undefined => this.current;
    const portLabels = ['port', 'kind', 'network'];
    type PortRow = { labels: Record<string, string>; c: StatsResponse['ports'][number] | NatNetworkState['hostPort'] | StatsResponse['uplinks'][number] };
    const ports = (x: Scrape): PortRow[] => [
      ...x.stats.ports.map((p) => ({ labels: { port: p.name, kind: 'endpoint', network: p.network }, c: p })),
      ...x.stats.uplinks.map((u) => ({ labels: { port: `uplink/${u.interface}`, kind: 'uplink', network: u.network }, c: u })),
      ...x.nat.map((n) => ({ labels: { port: `host/${n.hostPort.ifname}`, kind: 'nat-host', network: n.network }, c: n.hostPort })),
    ];
    const perPort = (pick: (c: PortRow['c']) => number) => (x: Scrape): [Record<string, string>, number][] => ports(x).map((p) => [p.labels, pick(p.c)]);
    mirroredCounter(r, 'vsw_port_rx_frames_total', 'Frames received from the port (super-frames count once)', portLabels, perPort((c) => c.rxFrames), s);
    mirroredCounter(r, 'vsw_port_rx_bytes_total', 'Bytes received from the port', portLabels, perPort((c) => c.rxBytes), s);
    mirroredCounter(r, 'vsw_port_tx_frames_total', 'Frames written to the port', portLabels, perPort((c) => c.txFrames), s);
    mirroredCounter(r, 'vsw_port_tx_bytes_total', 'Bytes written to the port', portLabels, perPort((c) => c.txBytes), s);
    mirroredCounter(r, 'vsw_port_drops_total', 'Frames dropped at the port, by reason (src/packet/drop-reasons.ts)', [...portLabels, 'reason'], (x) =>
      ports(x).flatMap((p) => Object.entries(p.c.drops).map(([reason, n]): [Record<string, string>, number] => [{ ...p.labels, reason }, n])),
    s);
    mirroredGauge(r, 'vsw_port_up', '1 while the switch moves the port\'s frames, 0 while it is down (see vsw endpoint ls)', portLabels, (x) => [
      ...this.service.state.listEndpoints().map((e): [Record<string, string>, number] => [{ port: e.name, kind: 'endpoint', network: e.network }, e.state === 'down' ? 0 : 1]),
      ...x.hostPorts.map((h): [Record<string, string>, number] => [{ port: h.port, kind: 'nat-host', network: h.network }, h.up ? 1 : 0]),
      ...x.stats.uplinks.map((u): [Record<string, string>, number] => [{ port: `uplink/${u.interface}`, kind: 'uplink', network: u.network }, u.down === undefined ? 1 : 0]),
    ], s);

    mirroredGauge(r, 'vsw_flow_table_entries', 'Flows cached in the unified flow table', [], (x) => [[{}, x.stats.switch.vfp.flows]], s);
    mirroredGauge(r, 'vsw_flow_table_capacity', 'Entries the unified flow table holds at most (--max-flows)', [], (x) => [[{}, x.stats.switch.vfp.flowCapacity]], s);
    mirroredGauge(r, 'vsw_conntrack_entries', 'Tracked connections', [], (x) => [[{}, x.stats.switch.vfp.connections.live]], s);
    mirroredGauge(r, 'vsw_conntrack_capacity', 'Tracked connections the table holds at most', [], (x) => [[{}, x.stats.switch.vfp.connections.capacity]], s);
    mirroredCounter(r, 'vsw_conntrack_refused_total', 'New connections refused at the per-port or table bound', [], (x) => [[{}, x.stats.switch.vfp.connections.refused]], s);

    const natRows = (pick: (n: NatNetworkState) => number) => (x: Scrape): [Record<string, string>, number][] => x.nat.map((n) => [{ network: n.network }, pick(n)]);
    mirroredGauge(r, 'vsw_nat_translations', 'Live dynamic NAT translations (ports in use from the pool)', ['network'], natRows((n) => n.counters.active), s);
    mirroredGauge(r, 'vsw_nat_pool_size', 'External ports per protocol in the NAT pool', ['network'], natRows((n) => n.counters.poolSize), s);
    mirroredCounter(r, 'vsw_nat_translations_created_total', 'Dynamic NAT translations created', ['network'], natRows((n) => n.counters.created), s);
    mirroredCounter(r, 'vsw_nat_translations_expired_total', 'NAT translations freed because their connection ended', ['network'], natRows((n) => n.counters.expired), s);
    mirroredCounter(r, 'vsw_nat_refused_total', 'New flows dropped because the NAT pool was exhausted', ['network'], natRows((n) => n.counters.refused), s);

    const tunnelRows = (pick: (t: OverlayNetworkState['counters']['tunnel']) => number) => (x: Scrape): [Record<string, string>, number][] =>
      x.overlay.map((o) => [{ network: o.network, vni: String(o.vni) }, pick(o.counters.tunnel)]);
    mirroredCounter(r, 'vsw_overlay_tunnel_frames_in_total', 'Frames into the VXLAN tunnel from local ports', ['network', 'vni'], tunnelRows((t) => t.framesIn), s);
    mirroredCounter(r, 'vsw_overlay_tunnel_frames_out_total', 'Frames out of the VXLAN tunnel to local ports', ['network', 'vni'], tunnelRows((t) => t.framesOut), s);
    mirroredCounter(r, 'vsw_overlay_flooded_total', 'Frames flooded to every peer (head-end replication)', ['network', 'vni'], tunnelRows((t) => t.flooded), s);
    mirroredCounter(r, 'vsw_overlay_arp_suppressed_total', 'ARP requests answered locally', ['network', 'vni'], tunnelRows((t) => t.arpSuppressed), s);
    mirroredCounter(r, 'vsw_overlay_too_big_total', 'Frames too big for the tunnel (ICMP frag-needed sent)', ['network', 'vni'], tunnelRows((t) => t.tooBig), s);
    const underlayRows = (pick: (u: OverlayNetworkState['counters']['underlay']) => number) => (x: Scrape): [Record<string, string>, number][] =>
      x.overlay.map((o) => [{ network: o.network, vni: String(o.vni) }, pick(o.counters.underlay)]);
    mirroredCounter(r, 'vsw_overlay_underlay_datagrams_in_total', 'VXLAN datagrams received on the underlay socket the network rides on', ['network', 'vni'], underlayRows((u) => u.datagramsIn), s);
    mirroredCounter(r, 'vsw_overlay_underlay_datagrams_out_total', 'VXLAN datagrams sent on the underlay socket the network rides on', ['network', 'vni'], underlayRows((u) => u.datagramsOut), s);
    mirroredCounter(r, 'vsw_overlay_underlay_send_failed_total', 'VXLAN datagrams the underlay socket refused', ['network', 'vni'], underlayRows((u) => u.sendFailed), s);

    type BackendRow = [Record<string, string>, number];
    const backendRows = (pick: (b: LoadBalancer['backends'][number]) => number | null) => (x: Scrape): BackendRow[] =>
      x.loadBalancers.flatMap((lb) =>
        lb.backends.flatMap((b): BackendRow[] => {
          const value = pick(b);
          return value === null ? [] : [[{ lb: lb.name, network: lb.network, backend: `${b.ip}:${b.port}` }, value]];
        }),
      );
    const lbLabels = ['lb', 'network', 'backend'];
    mirroredGauge(r, 'vsw_lb_backend_up', '1 while the backend takes new connections (not drained, its probe passing, its endpoint up), else 0', lbLabels, backendRows((b) => (b.state === 'active' ? 1 : 0)), s);
    mirroredGauge(r, 'vsw_lb_backend_probe_up', "The backend's health probe: 1 up (or before its first verdict), 0 down; absent when it is not probed here", lbLabels, backendRows((b) => (b.health === undefined || b.health.status === 'unprobed' ? null : b.health.status === 'down' ? 0 : 1)), s);
    mirroredCounter(r, 'vsw_lb_backend_probe_failures_total', 'Health probes of the backend that failed', lbLabels, backendRows((b) => b.health?.failures ?? 0), s);
    mirroredCounter(r, 'vsw_lb_backend_connections_total', 'Connections balanced to the backend', lbLabels, backendRows((b) => b.counters?.connections ?? 0), s);
    mirroredGauge(r, 'vsw_lb_backend_connections', "Connections balanced to the backend whose connection-tracking entry is alive (TCP's TIME_WAIT included)", lbLabels, backendRows((b) => b.counters?.active ?? 0), s);
    mirroredCounter(r, 'vsw_lb_backend_bytes_total', 'Bytes of the connections balanced to the backend, both ways', lbLabels, backendRows((b) => b.counters?.bytes ?? 0), s);

    const vmRows = (pick: (v: VhostEndpointState) => number) => (x: Scrape): [Record<string, string>, number][] => x.vms.map((v) => [{ port: v.name, network: v.network }, pick(v.device)]);
    mirroredGauge(r, 'vsw_vhost_connected', "1 while a VM endpoint's VMM is connected to its vhost-user socket", ['port', 'network'], vmRows((v) => (v.state === 'waiting' ? 0 : 1)), s);
    mirroredCounter(r, 'vsw_vhost_connections_total', "Connections of VMMs to a VM endpoint's socket", ['port', 'network'], vmRows((v) => v.connections), s);
    mirroredCounter(r, 'vsw_vhost_broken_total', "Times a VM endpoint's guest broke a virtio ring rule (its queues were stopped)", ['port', 'network'], vmRows((v) => v.brokenCount), s);
    mirroredCounter(r, 'vsw_vhost_rx_dropped_total', 'Frames for a VM dropped: no_buffer (the guest posted no receive buffer) or unfit (they did not fit its buffers whole)', ['port', 'network', 'reason'], (x) =>
      x.vms.flatMap((v): [Record<string, string>, number][] => [
        [{ port: v.name, network: v.network, reason: 'no_buffer' }, v.device.rxNoBuffer],
        [{ port: v.name, network: v.network, reason: 'unfit' }, v.device.rxUnfit],
      ]),
    s);

    mirroredGauge(r, 'vsw_endpoints', 'Endpoints, by network', ['network'], () => {
      const counts = new Map<string, number>();
      for (const e of this.service.state.listEndpoints()) counts.set(e.network, (counts.get(e.network) ?? 0) + 1);
      return [...counts].map(([network, n]) => [{ network }, n]);
    }, s);
  }

  /** Called after each write of state.json. */
  observeStateWrite(seconds: number, bytes: number): void {
    this.stateWrites.observe(seconds);
    this.stateBytes.set(bytes);
  }

  /** The text a scrape gets: one read of the data plane, then every metric from it. Scrapes take turns (they share `current`). */
  render(): Promise<string> {
    const turn = this.rendering.then(() => this.renderNow());
    this.rendering = turn.catch(() => undefined);
    return turn;
  }

  private rendering: Promise<unknown> = Promise.resolve();

  private async renderNow(): Promise<string> {
    const service = this.service;
    const [stats, nat, overlay, loadBalancers, vms] = await Promise.all([service.stats(), service.nat.list(undefined, true), service.overlay.list(undefined, true), service.lb.list(), service.vmEndpoints()]);
    const hostPorts = [...service.state.networks.values()].flatMap((r) =>
      r.nat ? [{ port: `host/${r.nat.info.hostInterface}`, network: r.network.name, portId: r.nat.portId, up: r.nat.down === null }] : [],
    );
    this.current = { stats, nat, overlay, hostPorts, loadBalancers, vms };
    try {
      return await this.registry.metrics();
    } finally {
      this.current = undefined;
    }
  }

  async listen(address: MetricsAddress): Promise<void> {
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('vsw serves only GET /metrics here.\n');
        return;
      }
      this.render().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: unknown) => {
          this.logger.error({ err }, 'could not collect the metrics');
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`vsw could not collect the metrics: ${(err as Error).message}\n`);
        },
      );
    });
    const where = `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'EADDRINUSE'
            ? `${where} is taken by another program: pass --metrics with another port`
            : err.code === 'EADDRNOTAVAIL'
              ? `${address.host} is not an address of this host: pass --metrics with one of its addresses, or just a port for 127.0.0.1`
              : `${err.message}: pass --metrics with another address`;
        reject(new Error(`cannot serve metrics on ${where} (${err.code ?? 'error'}); ${why}.`));
      });
      server.listen(address.port, address.host, () => resolve());
    });
    this.server = server;
    this.logger.info({ metrics: `http://${where}/metrics` }, 'serving Prometheus metrics');
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
