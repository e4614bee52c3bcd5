/**
 * Debian's dnsmasq as the LAN's DHCP server in a namespace of the test's own,
 * in the foreground (killed with the test), with its lease file in a
 * directory of the test's; the lease file is what tests judge by.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnInNetns } from './env.js';

export interface DnsmasqOptions {
  /** Namespace and interface it serves on (the interface has the server's address). */
  netns: string;
  ifname: string;
  /** "FIRST,LAST,MASK". */
  range: string;
  /** dnsmasq's shortest is 120. */
  leaseSeconds: number;
  /** Renewal and rebinding times it tells clients, short so a renewal happens within a test. */
  t1Seconds?: number;
  t2Seconds?: number;
  /** Directory for the lease file. */
  dir: string;
  /** More dnsmasq arguments (options, hosts to ignore). */
  extra?: string[];
}

export interface LeaseLine {
  expiry: number;
  mac: string;
  ip: string;
  hostname: string;
  clientId: string;
}

export class Dnsmasq {
  log = '';
  private constructor(
    readonly child: ChildProcess,
    readonly leaseFile: string,
  ) {}

  /** Starts it and resolves once it says it serves the range. */
  static async start(o: DnsmasqOptions): Promise<Dnsmasq> {
    const leaseFile = join(o.dir, 'leases');
    const child = spawnInNetns(o.netns, 'dnsmasq', [
      '--no-daemon',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--port=0',
      '--pid-file=',
      `--interface=${o.ifname}`,
      '--bind-interfaces',
      `--dhcp-range=${o.range},${o.leaseSeconds}s`,
      `--dhcp-leasefile=${leaseFile}`,
      ...(o.t1Seconds === undefined ? [] : [`--dhcp-option=option:T1,${o.t1Seconds}`]),
      ...(o.t2Seconds === undefined ? [] : [`--dhcp-option=option:T2,${o.t2Seconds}`]),
      '--log-dhcp',
      ...(o.extra ?? []),
    ]);
    const d = new Dnsmasq(child, leaseFile);
    child.stdout?.on('data', (b: Buffer) => (d.log += b.toString()));
    child.stderr?.on('data', (b: Buffer) => (d.log += b.toString()));
    const deadline = Date.now() + 10_000;
    while (!/DHCP, IP range/.test(d.log)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`dnsmasq did not start: ${d.log}`);
      await sleep(50);
    }
    return d;
  }

  /** The lease of `mac` in the lease file ("expiry-epoch mac ip hostname client-id" a line), or null. */
  async leaseFor(mac: string): Promise<LeaseLine | null> {
    const text = await readFile(this.leaseFile, 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      const [expiry, lineMac, ip, hostname, clientId] = line.split(' ');
      if (lineMac === mac.toLowerCase()) return { expiry: Number(expiry), mac: lineMac, ip, hostname, clientId };
    }
    return null;
  }

  /** Polls `probe` until it gives a value (not null or false); throws with dnsmasq's log after `timeoutMs`. */
  async waitFor<T>(what: string, probe: () => Promise<T | null | false>, timeoutMs: number): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value !== null && value !== false) return value;
      if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs / 1000} s; dnsmasq said:\n${this.log}`);
      await sleep(100);
    }
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}
