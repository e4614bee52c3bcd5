/**
 * A DHCPv4 client for one container endpoint (RFC 2131 section 4.4): it
 * obtains a lease with the endpoint's MAC from the LAN's server, keeps it
 * (renewing at T1, rebinding at T2), and gives it back on release.
 *
 * It owns no socket and no clock. Frames go out through `send`; the switch
 * hands in every frame that may be a reply (UDP from port 67 to port 68,
 * broadcast or to the endpoint's MAC) through `receive`. Time comes from
 * `now` and `setTimer`/`clearTimer`, randomness from `random`, so tests run
 * the whole life of a lease on a fake clock in microseconds.
 *
 * start() begins in rebooting when an address is remembered, in selecting otherwise:
 *
 *   state       sends                                    when                         goes to
 *   selecting   DISCOVER; again after 4, 8, 16, 32,      OFFER                        requesting
 *               64, 64, ... s, each ±1 s
 *   requesting  REQUEST naming the server, same backoff  ACK | NAK | 4th try unheard  bound | selecting | selecting
 *   rebooting   REQUEST for the remembered address       ACK | NAK | 2nd try unheard  bound | selecting | selecting
 *   bound       nothing                                  T1                           renewing
 *   renewing    REQUEST unicast to the server            ACK | NAK | T2               bound | selecting | rebinding
 *   rebinding   REQUEST broadcast                        ACK | NAK | lease end        bound | selecting | selecting
 *   init        nothing (after DECLINE or NAKs in a row) its wait ends                selecting
 *
 * A single timer is armed at a time, for the earliest thing due in the
 * current state (a retransmission, T1, T2, the lease's end); when it fires,
 * the state looks at the clock and does whatever is due. That keeps timers
 * from piling up and copes with clock jumps and setTimeout's 24.8-day limit.
 */

import { mustParseMac } from '../packet/ethernet.js';
import { buildDecline, buildDiscover, buildRelease, buildRequest, hostnameProblem, parseServerReply, type DhcpReply, type RequestTarget } from './frames.js';
import { leaseDeadlines, leaseFromAck, type DhcpLease } from './lease.js';

export type DhcpState =
  /** Not running: before start(), after stop(), release() or an acquire() that timed out. */
  | 'stopped'
  /** Waiting before discovering again (after a DECLINE, or a NAK that followed another). */
  | 'init'
  | 'selecting'
  | 'requesting'
  /** INIT-REBOOT's REQUEST for a remembered address is out. */
  | 'rebooting'
  | 'bound'
  | 'renewing'
  | 'rebinding';

/** Why a held lease ended without release(): its time ran out, a server refused to extend it, or a renewal gave another address. */
export type DhcpLeaseLoss = 'expired' | 'nak' | 'replaced';

export interface DhcpClientEvents {
  /** A lease was obtained (first, or again after one was lost). */
  lease: [lease: DhcpLease];
  /** The lease was extended by a renewal or rebinding: same address, new times. */
  renewed: [lease: DhcpLease];
  /** The lease is gone; the endpoint must stop using its address. The client goes on to discover a new one. */
  expired: [lease: DhcpLease, reason: DhcpLeaseLoss];
  /** Something went wrong that the client works around (a send that threw, an ACK it could not use); for the log. */
  error: [error: Error];
  /** Every state change, for logs and tests. */
  state: [to: DhcpState, from: DhcpState];
}

type Listener<K extends keyof DhcpClientEvents> = (...args: DhcpClientEvents[K]) => void;

/** Just enough of an event emitter, typed by DhcpClientEvents. Unlike Node's, an 'error' nobody listens to is dropped, not thrown. */
class DhcpEvents {
  private readonly listeners: { [K in keyof DhcpClientEvents]?: Listener<K>[] } = {};

  on<K extends keyof DhcpClientEvents>(event: K, listener: Listener<K>): void {
    const list = (this.listeners[event] ??= []) as Listener<K>[];
    list.push(listener);
  }

  off<K extends keyof DhcpClientEvents>(event: K, listener: Listener<K>): void {
    const list = this.listeners[event] as Listener<K>[] | undefined;
    const i = list?.indexOf(listener) ?? -1;
    if (i >= 0) list!.splice(i, 1);
  }

  emit<K extends keyof DhcpClientEvents>(event: K, ...args: DhcpClientEvents[K]): void {
    // A copy: a listener may remove itself (acquire's do).
    for (const listener of [...((this.listeners[event] ?? []) as Listener<K>[])]) listener(...args);
  }
}

export interface DhcpClientOptions {
  /** The endpoint's MAC, "aa:bb:cc:dd:ee:ff". */
  mac: string;
  /** Sent as option 12; the server may register it in DNS. */
  hostname?: string;
  /**
   * An address the endpoint held before (from saved state after a restart):
   * start() first asks to keep it (INIT-REBOOT) instead of discovering.
   */
  requestedAddress?: string;
  /** Puts a whole Ethernet frame on the LAN. May throw; the client reports it as 'error' and retries on schedule. */
  send(frame: Uint8Array): void;
  /** Milliseconds; default Date.now. */
  now?(): number;
  /** Default setTimeout. */
  setTimer?(callback: () => void, delayMs: number): unknown;
  /** Default clearTimeout. */
  clearTimer?(handle: unknown): void;
  /** Uniform in [0, 1), for transaction ids and jitter; default Math.random. */
  random?(): number;
}

/** First retransmission delay and the cap it doubles up to (RFC 2131 4.1: 4 s, 8 s, ... 64 s). */
export const RETRANSMIT_FIRST_MS = 4_000;
export const RETRANSMIT_MAX_MS = 64_000;
/** Each delay is moved by up to this much either way, so that clients started together do not stay in step. */
export const RETRANSMIT_JITTER_MS = 1_000;
/** REQUESTs sent for an OFFER before giving up on it and discovering again (4 s + 8 s + 16 s + 32 s of waiting). */
export const REQUEST_ATTEMPTS = 4;
/**
 * INIT-REBOOT REQUESTs before discovering instead. Few, because a server that
 * does not know the client stays silent (RFC 2131 4.3.2) and every try delays
 * the endpoint.
 */
export const REBOOT_ATTEMPTS = 2;
/** In RENEWING and REBINDING, retransmit after half the time left, but wait at least this long (RFC 2131 4.4.5). */
export const RENEW_RETRANSMIT_MIN_MS = 60_000;
/** After a DECLINE, wait this long before discovering again (RFC 2131 3.1 step 5). */
export const DECLINE_WAIT_MS = 10_000;
/** setTimeout's largest delay; longer waits are taken in pieces. */
const MAX_TIMER_MS = 0x7fffffff;

/** acquire()'s rejection: no lease in the time given, or the client stopped first. The message is one sentence for the operator. */
export class DhcpAcquireError extends Error {
  override readonly name = 'DhcpAcquireError';
}

/** The sentence acquire() rejects with: say what did not happen and what to do. */
function timeoutSentence(timeoutMs: number, offeredBy: string | null): string {
  const seconds = Number((timeoutMs / 1000).toFixed(1));
  if (offeredBy !== null) {
    return `the DHCP server ${offeredBy} offered an address but did not confirm it within ${seconds} s: check the server's log, or create the network without --ipam dhcp to give it static addresses`;
  }
  return `no DHCP server answered on the LAN within ${seconds} s: check that the uplink's network has one, or create the network without --ipam dhcp to give it static addresses`;
}

export class DhcpClient {
  private readonly events = new DhcpEvents();
  private readonly macBytes: Uint8Array;
  private readonly clock: { now(): number; setTimer(callback: () => void, delayMs: number): unknown; clearTimer(handle: unknown): void };
  private readonly random: () => number;

  private currentState: DhcpState = 'stopped';
  private timer: unknown = null;
  private timerAt = Infinity;

  /** The transaction in progress: replies must carry this xid. */
  private xid = 0;
  /** When the current exchange began, for the secs field. */
  private exchangeStartedAt = 0;
  /** When the current REQUEST was first sent: a lease it obtains counts from here. */
  private requestFirstSentAt = 0;
  private attempts = 0;
  private nextRetransmitAt = Infinity;
  /** When 'init' ends and discovery starts. */
  private initUntil = Infinity;
  /** NAKs in a row, so a server that refuses every REQUEST is not asked in a tight loop. */
  private naksInARow = 0;

  private offer: DhcpReply | null = null;
  private currentLease: DhcpLease | null = null;
  private deadlines = { t1At: Infinity, t2At: Infinity, expiresAt: Infinity };
  /** The address to ask for: a remembered one, or the last lease's. */
  private preferredAddress: string | null;
  /** Who last offered, for acquire's sentence. */
  private lastOfferFrom: string | null = null;

  constructor(private readonly options: DhcpClientOptions) {
    this.macBytes = mustParseMac(options.mac);
    if (options.hostname !== undefined) {
      const problem = hostnameProblem(options.hostname);
      if (problem !== null) throw new RangeError(problem);
    }
    this.preferredAddress = options.requestedAddress ?? null;
    this.clock = {
      now: options.now ?? Date.now,
      setTimer: options.setTimer ?? ((callback, delayMs) => setTimeout(callback, delayMs)),
      clearTimer: options.clearTimer ?? ((handle) => clearTimeout(handle as NodeJS.Timeout)),
    };
    this.random = options.random ?? Math.random;
  }

  get state(): DhcpState {
    return this.currentState;
  }

  /** The lease held now (bound, renewing or rebinding), or the last one after stop(); null once released or lost. */
  get lease(): DhcpLease | null {
    return this.currentLease;
  }

  on<K extends keyof DhcpClientEvents>(event: K, listener: Listener<K>): this {
    this.events.on(event, listener);
    return this;
  }

  off<K extends keyof DhcpClientEvents>(event: K, listener: Listener<K>): this {
    this.events.off(event, listener);
    return this;
  }

  /**
   * Begins: INIT-REBOOT for a remembered address (the constructor's
   * requestedAddress, or the lease held when stop() was called, if it has
   * not ended), discovery otherwise. Does nothing if already running.
   */
  start(): void {
    if (this.currentState !== 'stopped') return;
    if (this.currentLease !== null && this.clock.now() >= this.deadlines.expiresAt) this.currentLease = null;
    if (this.currentLease !== null) this.preferredAddress = this.currentLease.address;
    this.currentLease = null;
    this.deadlines = { t1At: Infinity, t2At: Infinity, expiresAt: Infinity };
    this.naksInARow = 0;
    if (this.preferredAddress !== null) this.beginReboot(this.preferredAddress);
    else this.beginDiscovery();
  }

  /**
   * Starts if needed and resolves with the lease once one is held, or rejects
   * with a DhcpAcquireError (one sentence) after timeoutMs, having stopped
   * the client, so that creating an endpoint fails in a stated time and
   * leaves nothing behind. Also rejects if stop() or release() is called first.
   */
  acquire(timeoutMs: number): Promise<DhcpLease> {
    if (this.currentLease !== null && this.isHolding()) return Promise.resolve(this.currentLease);
    return new Promise<DhcpLease>((resolve, reject) => {
      const finish = () => {
        this.clock.clearTimer(timeout);
        this.off('lease', onLease);
        this.off('state', onState);
      };
      const onLease = (lease: DhcpLease) => {
        finish();
        resolve(lease);
      };
      const onState = (to: DhcpState) => {
        if (to !== 'stopped') return;
        finish();
        reject(new DhcpAcquireError('the DHCP client was stopped before it obtained a lease'));
      };
      const timeout = this.clock.setTimer(() => {
        const sentence = timeoutSentence(timeoutMs, this.lastOfferFrom);
        finish();
        this.stop();
        reject(new DhcpAcquireError(sentence));
      }, timeoutMs);
      this.on('lease', onLease);
      this.on('state', onState);
      this.start();
    });
  }

  /** Stops without telling the server: the lease stays the endpoint's until it ends, and a later start() asks for it again. */
  stop(): void {
    this.cancelTimer();
    this.setState('stopped');
  }

  /**
   * Gives the lease back (DHCPRELEASE to the server that granted it, sent
   * once: RFC 2131 has no answer to it) and stops. Returns whether there was
   * a lease to release.
   */
  release(): boolean {
    const lease = this.isHolding() ? this.currentLease : null;
    if (lease !== null) {
      this.newTransaction();
      this.transmit(
        buildRelease({ mac: this.options.mac, xid: this.xid, clientAddress: lease.address, serverId: lease.serverId, serverMac: lease.serverMac }),
      );
    }
    this.currentLease = null;
    this.preferredAddress = null;
    this.stop();
    return lease !== null;
  }

  /**
   * The lease's address turned out to be in use by another host (the caller
   * found it, e.g. by an ARP probe): DHCPDECLINE to the server, then, after
   * DECLINE_WAIT_MS, discovery again. Returns false when no lease is held.
   */
  decline(message?: string): boolean {
    const lease = this.isHolding() ? this.currentLease : null;
    if (lease === null) return false;
    this.newTransaction();
    this.transmit(buildDecline({ mac: this.options.mac, xid: this.xid, requestedAddress: lease.address, serverId: lease.serverId, message }));
    this.currentLease = null;
    this.preferredAddress = null;
    this.deadlines = { t1At: Infinity, t2At: Infinity, expiresAt: Infinity };
    this.waitThenDiscover(DECLINE_WAIT_MS);
    return true;
  }

  /** Renews now rather than at T1 (an operator's request, or an uplink that came back); false when no lease is held. */
  renew(): boolean {
    if (!this.isHolding()) return false;
    if (this.currentState === 'bound') this.beginRenewing();
    return true;
  }

  /**
   * A frame from the LAN that may be a reply for this client. Returns true
   * when it was one and was acted on; anything else (another client's, a
   * malformed frame, a reply the current state does not expect) is ignored.
   * `checksumPartial`: see FrameReadOptions.
   */
  receive(frame: Uint8Array, opts: { checksumPartial?: boolean } = {}): boolean {
    if (this.currentState === 'stopped' || this.currentState === 'init' || this.currentState === 'bound') return false;
    const reply = parseServerReply(frame, { xid: this.xid, mac: this.macBytes }, opts);
    if (reply === null) return false;
    switch (this.currentState) {
      case 'selecting':
        if (reply.type !== 'offer' || reply.serverId === null) return false;
        this.onOffer(reply);
        return true;
      case 'requesting':
        // Only the chosen server's answer counts: the others saw a REQUEST naming someone else.
        if (reply.serverId !== null && reply.serverId !== this.offer!.serverId) return false;
        if (reply.type === 'ack') return this.onAck(reply, this.offer!.serverId);
        if (reply.type === 'nak') return this.onNak(reply);
        return false;
      case 'rebooting':
        if (reply.type === 'ack') return this.onAck(reply, null);
        if (reply.type === 'nak') return this.onNak(reply);
        return false;
      case 'renewing':
      case 'rebinding':
        if (reply.type === 'ack') return this.onAck(reply, this.currentLease!.serverId);
        if (reply.type === 'nak') return this.onNak(reply);
        return false;
    }
  }

  // ---- transitions ---------------------------------------------------------------

  private beginDiscovery(): void {
    this.newTransaction();
    this.offer = null;
    this.attempts = 0;
    this.setState('selecting');
    this.sendDiscover();
  }

  private beginReboot(address: string): void {
    this.newTransaction();
    this.attempts = 0;
    this.requestFirstSentAt = this.clock.now();
    this.setState('rebooting');
    this.sendRequest({ kind: 'init-reboot', requestedAddress: address });
  }

  private onOffer(offer: DhcpReply): void {
    this.offer = offer;
    this.lastOfferFrom = offer.serverId;
    // Same xid as the DISCOVER and OFFER (RFC 2131 4.4.1), fresh backoff.
    this.attempts = 0;
    this.requestFirstSentAt = this.clock.now();
    this.setState('requesting');
    this.sendRequest({ kind: 'selecting', requestedAddress: offer.yourAddress, serverId: offer.serverId! });
  }

  private onAck(ack: DhcpReply, knownServerId: string | null): boolean {
    const lease = leaseFromAck(ack, this.requestFirstSentAt, knownServerId);
    if (typeof lease === 'string') {
      // Treated as no answer: the retransmissions go on and the usual fallbacks apply.
      this.events.emit('error', new Error(lease));
      return false;
    }
    const previous = this.currentLease;
    this.naksInARow = 0;
    this.currentLease = lease;
    this.preferredAddress = lease.address;
    this.deadlines = leaseDeadlines(lease);
    this.nextRetransmitAt = Infinity;
    this.setState('bound');
    if (previous === null) {
      this.events.emit('lease', lease);
    } else if (previous.address === lease.address) {
      this.events.emit('renewed', lease);
    } else {
      this.events.emit('expired', previous, 'replaced');
      this.events.emit('lease', lease);
    }
    this.rearm();
    return true;
  }

  private onNak(nak: DhcpReply): boolean {
    const lost = this.currentLease;
    this.currentLease = null;
    this.preferredAddress = null;
    this.deadlines = { t1At: Infinity, t2At: Infinity, expiresAt: Infinity };
    this.naksInARow++;
    if (lost !== null) this.events.emit('expired', lost, 'nak');
    if (nak.message) this.events.emit('error', new Error(`the DHCP server ${nak.serverId ?? nak.sourceIp} refused: ${nak.message}`));
    // The first NAK restarts at once (the usual case: the address moved); more in a row back off.
    if (this.naksInARow === 1) this.beginDiscovery();
    else this.waitThenDiscover(this.backoff(this.naksInARow - 1));
    return true;
  }

  private beginRenewing(): void {
    this.newTransaction();
    this.requestFirstSentAt = this.clock.now();
    this.setState('renewing');
    this.sendRenewal();
  }

  private beginRebinding(): void {
    this.newTransaction();
    this.requestFirstSentAt = this.clock.now();
    this.setState('rebinding');
    this.sendRebind();
  }

  private expire(): void {
    const lost = this.currentLease!;
    this.currentLease = null;
    this.deadlines = { t1At: Infinity, t2At: Infinity, expiresAt: Infinity };
    this.events.emit('expired', lost, 'expired');
    // Ask for the same address again: the server may still have it free.
    this.beginDiscovery();
  }

  private waitThenDiscover(delayMs: number): void {
    this.initUntil = this.clock.now() + delayMs;
    this.setState('init');
    this.rearm();
  }

  // ---- what the timer does ---------------------------------------------------------

  private onTimer(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = this.clock.now();
    switch (this.currentState) {
      case 'stopped':
        return;
      case 'init':
        if (now >= this.initUntil) return this.beginDiscovery();
        break;
      case 'selecting':
        if (now >= this.nextRetransmitAt) return this.sendDiscover();
        break;
      case 'requesting':
        if (now >= this.nextRetransmitAt) {
          if (this.attempts >= REQUEST_ATTEMPTS) return this.beginDiscovery();
          return this.sendRequest({ kind: 'selecting', requestedAddress: this.offer!.yourAddress, serverId: this.offer!.serverId! });
        }
        break;
      case 'rebooting':
        if (now >= this.nextRetransmitAt) {
          if (this.attempts >= REBOOT_ATTEMPTS) return this.beginDiscovery();
          return this.sendRequest({ kind: 'init-reboot', requestedAddress: this.preferredAddress! });
        }
        break;
      case 'bound':
        if (now >= this.deadlines.expiresAt) return this.expire();
        if (now >= this.deadlines.t2At) return this.beginRebinding();
        if (now >= this.deadlines.t1At) return this.beginRenewing();
        break;
      case 'renewing':
        if (now >= this.deadlines.expiresAt) return this.expire();
        if (now >= this.deadlines.t2At) return this.beginRebinding();
        if (now >= this.nextRetransmitAt) return this.sendRenewal();
        break;
      case 'rebinding':
        if (now >= this.deadlines.expiresAt) return this.expire();
        if (now >= this.nextRetransmitAt) return this.sendRebind();
        break;
    }
    // Woken early (a long wait taken in pieces, or a clock that moved back): sleep again.
    this.rearm();
  }

  /** The earliest time something is due in the current state. */
  private nextWakeAt(): number {
    switch (this.currentState) {
      case 'stopped':
        return Infinity;
      case 'init':
        return this.initUntil;
      case 'selecting':
      case 'requesting':
      case 'rebooting':
        return this.nextRetransmitAt;
      case 'bound':
        return this.deadlines.t1At;
      case 'renewing':
        return Math.min(this.nextRetransmitAt, this.deadlines.t2At);
      case 'rebinding':
        return Math.min(this.nextRetransmitAt, this.deadlines.expiresAt);
    }
  }

  private rearm(): void {
    const at = this.nextWakeAt();
    if (at === this.timerAt && this.timer !== null) return;
    this.cancelTimer();
    if (at === Infinity) return;
    const delay = Math.min(Math.max(0, at - this.clock.now()), MAX_TIMER_MS);
    this.timerAt = at;
    this.timer = this.clock.setTimer(() => this.onTimer(), delay);
  }

  private cancelTimer(): void {
    if (this.timer !== null) this.clock.clearTimer(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  // ---- sending ---------------------------------------------------------------------

  /** 4 s, 8 s, 16 s, 32 s, 64 s, 64 s, ... for attempt 1, 2, ..., each ±1 s at random. */
  private backoff(attempt: number): number {
    const base = Math.min(RETRANSMIT_FIRST_MS * 2 ** Math.min(attempt - 1, 16), RETRANSMIT_MAX_MS);
    return base + (this.random() * 2 - 1) * RETRANSMIT_JITTER_MS;
  }

  private sendDiscover(): void {
    this.attempts++;
    this.nextRetransmitAt = this.clock.now() + this.backoff(this.attempts);
    this.transmit(buildDiscover({ ...this.messageBase(), ...(this.preferredAddress !== null ? { requestedAddress: this.preferredAddress } : {}) }));
    this.rearm();
  }

  private sendRequest(target: RequestTarget): void {
    this.attempts++;
    this.nextRetransmitAt = this.clock.now() + this.backoff(this.attempts);
    this.transmit(buildRequest({ ...this.messageBase(), ...target }));
    this.rearm();
  }

  /** Half the time left until `until`, at least RENEW_RETRANSMIT_MIN_MS (the caller's deadline cuts it short anyway). */
  private renewRetransmitAt(until: number): number {
    const now = this.clock.now();
    return now + Math.max((until - now) / 2, RENEW_RETRANSMIT_MIN_MS);
  }

  private sendRenewal(): void {
    const lease = this.currentLease!;
    this.nextRetransmitAt = this.renewRetransmitAt(this.deadlines.t2At);
    this.transmit(
      buildRequest({ ...this.messageBase(), kind: 'renewing', clientAddress: lease.address, serverId: lease.serverId, serverMac: lease.serverMac }),
    );
    this.rearm();
  }

  private sendRebind(): void {
    const lease = this.currentLease!;
    this.nextRetransmitAt = this.renewRetransmitAt(this.deadlines.expiresAt);
    this.transmit(buildRequest({ ...this.messageBase(), kind: 'rebinding', clientAddress: lease.address }));
    this.rearm();
  }

  private messageBase() {
    return {
      mac: this.options.mac,
      xid: this.xid,
      secs: Math.floor((this.clock.now() - this.exchangeStartedAt) / 1000),
      ...(this.options.hostname !== undefined ? { hostname: this.options.hostname } : {}),
    };
  }

  private newTransaction(): void {
    this.xid = Math.floor(this.random() * 0x1_0000_0000) >>> 0;
    this.exchangeStartedAt = this.clock.now();
  }

  private transmit(frame: Uint8Array): void {
    try {
      this.options.send(frame);
    } catch (err) {
      this.events.emit('error', err instanceof Error ? err : new Error(String(err)));
    }
  }

  private isHolding(): boolean {
    return this.currentState === 'bound' || this.currentState === 'renewing' || this.currentState === 'rebinding';
  }

  private setState(to: DhcpState): void {
    const from = this.currentState;
    if (from === to) return;
    this.currentState = to;
    this.events.emit('state', to, from);
  }
}
