/**
 * The control-plane half of DNS in the switch (docs/DNS.md): which names each
 * network's resolver answers (its endpoints' and its load balancers'), pushed
 * whole to the data plane after every change; the names' clash checks before
 * an endpoint or a load balancer is created; the queries the resolver hands
 * over (names that are not the network's), asked of the host's resolvers and
 * answered back through the container's port; and the resolv.conf of the
 * compartments vsw creates (`ip netns exec` mounts /etc/netns/NAME/resolv.conf
 * over /etc/resolv.conf).
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { NetworkNames, type NameRecord } from '../dns/names.js';
import { DnsQueryParser, DnsRcode, DnsVerdict, emitDnsError } from '../packet/dns.js';
import type { DataPlane } from '../switch/dataplane.js';
import { dnsAnswerFrame, dnsQueryOfFrame } from '../switch/stages/dns-stage.js';
import { conflict } from './errors.js';
import { macForIp } from './ipam.js';
import type { NetworkRecord, State } from './state.js';

export type DnsDataPlane = Pick<DataPlane, 'setNames' | 'deliver' | 'on'>;

/** An upstream resolver: the host's, from /etc/resolv.conf, or given with `vsw daemon --dns-upstream`. */
export interface Upstream {
  host: string;
  port: number;
}

const UPSTREAM_TIMEOUT_MS = 2000;
/** Forwarded queries in flight at once; more are answered SERVFAIL at once rather than queued. */
const MAX_IN_FLIGHT = 256;
const NETNS_ETC = '/etc/netns';

/** The nameservers of the host's resolv.conf (port 53); none when it has none or cannot be read. */
export function hostUpstreams(path = '/etc/resolv.conf'): Upstream[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: Upstream[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+([0-9.]+)\s*$/.exec(line);
    if (m && net.isIPv4(m[1])) out.push({ host: m[1], port: 53 });
  }
  return out;
}

/** "10.0.0.2", "127.0.0.1:5353", comma-separated; the sentence saying what is wrong otherwise. */
export function parseUpstreams(text: string): Upstream[] | string {
  const out: Upstream[] = [];
  for (const part of text.split(',')) {
    const m = /^([0-9.]+)(?::(\d{1,5}))?$/.exec(part.trim());
    const port = m?.[2] === undefined ? 53 : Number(m[2]);
    if (!m || !net.isIPv4(m[1]) || port < 1 || port > 65535) return `--dns-upstream ${text} is not a list of IPv4 ADDRESS[:PORT]: write e.g. 10.0.0.2 or 127.0.0.1:5353,10.0.0.3.`;
    out.push({ host: m[1], port });
  }
  return out;
}

export class DnsService {
  private listening = false;
  private readonly inFlight = new Set<string>();

  constructor(
    private readonly state: State,
    private readonly dataPlane: DnsDataPlane,
    private readonly logger: Logger,
    private readonly upstreams: () => Upstream[],
  ) {}

  /** The names a network's resolver answers: its endpoints' (by their names) and its load balancers' (to their VIPs). */
  records(network: string): NameRecord[] {
    const out: NameRecord[] = [];
    for (const r of this.state.endpointsOn(network)) out.push({ owner: r.endpoint.id, name: r.endpoint.name, ipv4: [r.endpoint.ip] });
    for (const lb of this.state.loadBalancers.values()) if (lb.network === network) out.push({ owner: lb.id, name: lb.name, ipv4: [lb.vip] });
    return out;
  }

  /**
   * Whether `name` may be added to a network's names: a 409 with the sentence
   * why not (it is taken there, in either form). A name that is no DNS name
   * is not refused: it is simply not answered (endpoint names allow more).
   */
  checkName(net: NetworkRecord, owner: string, name: string): void {
    if (net.network.resolver === undefined) return;
    const why = this.namesOf(net.network.name).names.refusal({ owner, name });
    if (why !== null && !/is not a DNS name|too long/.test(why)) throw conflict(`${why}.`);
  }

  /** Pushes the network's names to its resolver (names that are no DNS names are left out). */
  async sync(network: string): Promise<void> {
    const net = this.state.networks.get(network);
    if (!net || net.network.resolver === undefined) return;
    this.listen();
    const refused = await this.dataPlane.setNames(net.network.id, this.namesOf(network).accepted);
    if (refused !== null) this.logger.warn({ network, refused }, 'the data plane refused the network\'s names');
  }

  /** The names the network's resolver holds: every record that is a DNS name and not taken by one before it. */
  private namesOf(network: string): { names: NetworkNames; accepted: NameRecord[] } {
    const names = new NetworkNames(network);
    const accepted = this.records(network).filter((r) => names.add(r) === null);
    return { names, accepted };
  }

  /** Every network's names (after a restore). */
  async syncAll(): Promise<void> {
    for (const name of this.state.networks.keys()) await this.sync(name);
  }

  /**
   * A compartment vsw created gets a resolv.conf pointing at the resolver
   * of the network its endpoint joins (`ip netns exec` and `vsw run` use it).
   * Namespaces vsw did not create are left alone.
   */
  async writeResolvConf(netns: string, network: string): Promise<void> {
    const net = this.state.networks.get(network);
    if (!this.state.compartments.has(netns) || net?.network.resolver === undefined) return;
    const dir = `${NETNS_ETC}/${netns}`;
    await mkdir(dir, { recursive: true });
    await writeFile(`${dir}/resolv.conf`, `# written by vsw for network ${network}\nnameserver ${net.network.resolver}\nsearch ${network}\noptions ndots:1\n`);
  }

  async removeResolvConf(netns: string): Promise<void> {
    await rm(`${NETNS_ETC}/${netns}`, { recursive: true, force: true });
  }

  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    this.dataPlane.on('dnsQuery', (networkId: number, portId: number, fd: number, frame: Uint8Array) => {
      void this.forward(networkId, portId, fd, frame);
    });
  }

  /** A query for a name that is not the network's: asked of the upstreams, answered through the port it came from. */
  private async forward(networkId: number, portId: number, fd: number, frame: Uint8Array): Promise<void> {
    const net = [...this.state.networks.values()].find((r) => r.network.id === networkId);
    const q = dnsQueryOfFrame(frame);
    if (!net || net.network.resolver === undefined || q === null) return;
    // A TCP client resends its query when the answer is slow: one asking upstream is enough.
    const key = `${portId}/${q.transport}/${frame.length}/${q.message[0]}/${q.message[1]}/${Buffer.from(frame.subarray(26, 38)).toString('hex')}`;
    if (this.inFlight.has(key)) return;
    let answer: Uint8Array | null = null;
    if (this.inFlight.size < MAX_IN_FLIGHT) {
      this.inFlight.add(key);
      try {
        answer = await this.ask(q.message, q.transport === 'tcp');
      } finally {
        this.inFlight.delete(key);
      }
    }
    const reply = dnsAnswerFrame(frame, answer ?? servfail(q.message), macForIp(net.network.resolver));
    if (reply === null) return;
    await this.dataPlane.deliver(portId, fd, reply).catch((err: unknown) => this.logger.debug({ err, portId }, 'could not deliver a DNS answer'));
  }

  /** The first upstream's answer (over TCP when asked over TCP, or when the UDP answer came truncated); null when none answers. */
  private async ask(message: Uint8Array, tcp: boolean): Promise<Uint8Array | null> {
    for (const upstream of this.upstreams()) {
      try {
        let answer = tcp ? null : await askUdp(upstream, message);
        if (answer === null || (answer.length > 2 && (answer[2] & 0x02) !== 0)) answer = await askTcp(upstream, message);
        if (answer !== null) return answer;
      } catch (err) {
        this.logger.debug({ err, upstream }, 'an upstream resolver did not answer');
      }
    }
    return null;
  }
}

/** SERVFAIL for a query no upstream answered: its header and question. */
function servfail(message: Uint8Array): Uint8Array {
  const p = new DnsQueryParser();
  if (p.parse(message, 0, message.length) !== DnsVerdict.OK) return new Uint8Array(0);
  const out = new Uint8Array(message.length + 16);
  const n = emitDnsError(p, DnsRcode.SERVFAIL, out, 0, out.length);
  return out.subarray(0, n);
}

function askUdp(upstream: Upstream, message: Uint8Array): Promise<Uint8Array | null> {
  return new Promise((resolve) => {
    const socket = dgram.createSocket('udp4');
    const done = (answer: Uint8Array | null): void => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(null), UPSTREAM_TIMEOUT_MS);
    socket.on('error', () => done(null));
    socket.on('message', (msg) => {
      // The answer to this query: the id matches (anything else on the socket is ignored).
      if (msg.length >= 2 && msg[0] === message[0] && msg[1] === message[1]) done(new Uint8Array(msg));
    });
    socket.send(message, upstream.port, upstream.host);
  });
}

function askTcp(upstream: Upstream, message: Uint8Array): Promise<Uint8Array | null> {
  return new Promise((resolve) => {
    const socket = net.connect(upstream.port, upstream.host);
    let got = Buffer.alloc(0);
    const done = (answer: Uint8Array | null): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(null), UPSTREAM_TIMEOUT_MS);
    socket.on('error', () => done(null));
    socket.on('connect', () => {
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(message.length);
      socket.write(Buffer.concat([prefix, message]));
    });
    socket.on('data', (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) done(new Uint8Array(got.subarray(2, 2 + got.readUInt16BE(0))));
    });
    socket.on('end', () => done(null));
  });
}
