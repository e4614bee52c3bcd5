/**
 * A lease: what an ACK grants, in the form the service configures a container
 * with, and the times the client acts on (RFC 2131 4.4.5).
 */

import { formatIpv4Addr, parseIpv4Addr } from '../packet/ipv4.js';
import type { DhcpReply } from './frames.js';

/** Lease time 0xffffffff: the address is the client's for good; no renewal, no expiry (RFC 2131 3.3). */
export const INFINITE_LEASE_SECONDS = 0xffffffff;

/** T1 and T2 when the server sends none (RFC 2131 4.4.5). */
export const DEFAULT_T1_FRACTION = 0.5;
export const DEFAULT_T2_FRACTION = 0.875;

export interface DhcpLease {
  address: string;
  prefixLength: number;
  subnetMask: string;
  /** The first router the server named (the default gateway), or null when it named none. */
  router: string | null;
  dnsServers: string[];
  domain: string | null;
  /** The lease's length; INFINITE_LEASE_SECONDS for one that never ends. */
  leaseSeconds: number;
  /** T1: when to start renewing with the granting server, from obtainedAt. */
  t1Seconds: number;
  /** T2: when to start asking any server, from obtainedAt. */
  t2Seconds: number;
  mtu: number | null;
  /** Option 54 of the granting server: where renewals and the release go. */
  serverId: string;
  /** The next hop towards the server (see DhcpReply.serverMac). */
  serverMac: string;
  /**
   * When the REQUEST that obtained the lease was first sent, in ms of the
   * client's clock. The times above count from here, not from the ACK's
   * arrival, so a slow answer cannot stretch the lease (RFC 2131 4.4.1).
   */
  obtainedAt: number;
}

/** Prefix length of a contiguous mask, or null for a mask like 255.0.255.0. */
export function prefixLengthOfMask(mask: number): number | null {
  const inverted = ~mask >>> 0;
  // A contiguous mask inverted is 2^k - 1: adding 1 leaves a single bit.
  if ((inverted & (inverted + 1)) !== 0) return null;
  return 32 - Math.log2(inverted + 1);
}

/**
 * The historical classful mask, for a server that sends no mask option
 * (RFC 2131 says it should; RFC 1122 3.3.1.1 leaves the class as the fallback).
 */
function classfulPrefixLength(address: number): number {
  if (address >>> 31 === 0) return 8;
  if (address >>> 30 === 2) return 16;
  return 24;
}

/**
 * T1 and T2 the client will use: the server's when they are consistent
 * (0 < T1 < T2 < lease), RFC 2131's fractions otherwise. A server's T2
 * alone is kept if it lies inside the lease, with T1 then at half the lease
 * or at T2, whichever is earlier.
 */
export function renewalTimes(leaseSeconds: number, t1?: number | null, t2?: number | null): { t1Seconds: number; t2Seconds: number } {
  if (leaseSeconds === INFINITE_LEASE_SECONDS) return { t1Seconds: INFINITE_LEASE_SECONDS, t2Seconds: INFINITE_LEASE_SECONDS };
  const t2Seconds = t2 != null && t2 > 0 && t2 < leaseSeconds ? t2 : Math.floor(leaseSeconds * DEFAULT_T2_FRACTION);
  const t1Seconds = t1 != null && t1 > 0 && t1 < t2Seconds ? t1 : Math.min(Math.floor(leaseSeconds * DEFAULT_T1_FRACTION), t2Seconds);
  return { t1Seconds, t2Seconds };
}

/**
 * The lease an ACK grants, or a sentence saying why it cannot be used: no
 * lease time (RFC 2131 requires one in an ACK to a REQUEST), a zero lease, a
 * mask that is not contiguous, or no server identifier from either the ACK or
 * the caller (a renewal's ACK may omit it; the lease being renewed names it).
 */
export function leaseFromAck(ack: DhcpReply, obtainedAt: number, knownServerId: string | null = null): DhcpLease | string {
  if (ack.leaseSeconds === null || ack.leaseSeconds === 0) return `the DHCP server's ACK for ${ack.yourAddress} gives no lease time`;
  const address = parseIpv4Addr(ack.yourAddress) ?? 0;
  let prefixLength: number | null;
  if (ack.subnetMask === null) {
    prefixLength = classfulPrefixLength(address);
  } else {
    prefixLength = prefixLengthOfMask(parseIpv4Addr(ack.subnetMask) ?? 0);
    if (prefixLength === null) return `the DHCP server's ACK for ${ack.yourAddress} has the non-contiguous subnet mask ${ack.subnetMask}`;
  }
  const serverId = ack.serverId ?? knownServerId;
  if (serverId === null) return `the DHCP server's ACK for ${ack.yourAddress} does not identify the server`;
  const { t1Seconds, t2Seconds } = renewalTimes(ack.leaseSeconds, ack.t1Seconds, ack.t2Seconds);
  return {
    address: ack.yourAddress,
    prefixLength,
    subnetMask: formatIpv4Addr(prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0),
    router: ack.routers.length > 0 ? ack.routers[0] : null,
    dnsServers: ack.dnsServers,
    domain: ack.domain,
    leaseSeconds: ack.leaseSeconds,
    t1Seconds,
    t2Seconds,
    mtu: ack.mtu,
    serverId,
    serverMac: ack.serverMac,
    obtainedAt,
  };
}

/** When the lease's T1, T2 and end fall on the client's clock; Infinity for a lease that never ends. */
export function leaseDeadlines(lease: DhcpLease): { t1At: number; t2At: number; expiresAt: number } {
  if (lease.leaseSeconds === INFINITE_LEASE_SECONDS) return { t1At: Infinity, t2At: Infinity, expiresAt: Infinity };
  return {
    t1At: lease.obtainedAt + lease.t1Seconds * 1000,
    t2At: lease.obtainedAt + lease.t2Seconds * 1000,
    expiresAt: lease.obtainedAt + lease.leaseSeconds * 1000,
  };
}
