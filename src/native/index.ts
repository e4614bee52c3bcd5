/**
 * The only module that loads the Rust addon (native/). Everything above talks
 * to these typed wrappers; see docs/ARCHITECTURE.md for the contract.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

interface NativeAddon {
  VNET_HDR_LEN: number;
  tapOpen(name: string, netns: string | undefined, exclusive: boolean, persist: boolean): number;
  tapSetPersist(fd: number, persist: boolean): void;
  closeFd(fd: number): void;
  internetChecksum(buf: Uint8Array, offset: number, length: number, initial?: number): number;
  flowHashBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, out: Uint32Array): void;
  writeBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number;
  rxCreate(buffer: Uint8Array, lengths: Int32Array, slotSize: number, slotCount: number, headroom: number, vnetHdrLen: number, onBatch: (portId: number, count: number) => void): object;
  rxAddPort(engine: object, portId: number, fd: number): void;
  rxRemovePort(engine: object, portId: number): number;
  rxPausePort(engine: object, portId: number, paused: number): number;
  rxClose(engine: object): void;
}

// dist/src/native/index.js -> <package>/native/vsw_native.node
const addonPath = fileURLToPath(new URL('../../../native/vsw_native.node', import.meta.url));

function load(): NativeAddon {
  if (!existsSync(addonPath)) {
    throw new Error(`the native addon is not built (${addonPath} is missing): run \`npm run build:native\`.`);
  }
  return createRequire(import.meta.url)(addonPath) as NativeAddon;
}

const addon = load();

/** struct virtio_net_hdr without num_buffers: what TUNSETVNETHDRSZ 10 puts before every frame. */
export const VNET_HDR_LEN: number = addon.VNET_HDR_LEN;
/** Room before each received frame, so encapsulation can prepend headers in place. */
export const RX_HEADROOM = 128;
/** One slot holds the largest TSO super-frame (64 KiB of IP plus Ethernet) with its headroom. */
export const RX_SLOT_SIZE = 65_536 + 256;
/** Frames drained per readiness event; measured: more gained nothing, 8 cost 25%. */
export const RX_BATCH = 64;

export interface TapOpenOptions {
  /** Interface name inside the namespace, at most 15 bytes. */
  name: string;
  /** Path of a network namespace file such as /run/netns/NAME; absent means the caller's namespace. */
  netns?: string;
  /** Refuse to attach to an existing TAP of that name. Default true. */
  exclusive?: boolean;
  /** Keep the device when the fd closes. Default false. */
  persist?: boolean;
}

/** Creates (or attaches to a persistent) TAP with the vnet header and TSO offloads; returns a non-blocking fd. */
export function tapOpen(opts: TapOpenOptions): number {
  return addon.tapOpen(opts.name, opts.netns, opts.exclusive ?? true, opts.persist ?? false);
}

export function tapSetPersist(fd: number, persist: boolean): void {
  addon.tapSetPersist(fd, persist);
}

export function closeFd(fd: number): void {
  addon.closeFd(fd);
}

/** RFC 1071 checksum of buf[offset, offset+length) plus `initial` (an unfolded partial sum): the value for the header field. */
export function internetChecksum(buf: Uint8Array, offset: number, length: number, initial = 0): number {
  return addon.internetChecksum(buf, offset, length, initial);
}

/** out[i] = 5-tuple hash of the frame at offsets[i] (MACs and EtherType for non-IP frames). */
export function flowHashBatch(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, out: Uint32Array): void {
  addon.flowHashBatch(buf, offsets, lengths, count, out);
}

/** Writes `count` frames to fd, each preceded by the vnetHdrLen bytes before its offset; returns how many were accepted. */
export function writeBatch(fd: number, buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number, vnetHdrLen: number): number {
  return addon.writeBatch(fd, buf, offsets, lengths, count, vnetHdrLen);
}

/**
 * The receive side of one thread: readiness on that thread's libuv loop, up to
 * RX_BATCH frames drained into `buffer` per event, one `onBatch` call per batch.
 * Slot i's frame starts at frameOffset(i); its length is lengths[i]. A negative
 * count passed to onBatch is -errno: that port stopped and should be removed.
 */
export class RxEngine {
  readonly buffer: Buffer;
  readonly lengths: Int32Array;
  private readonly handle: object;
  private closed = false;

  constructor(onBatch: (portId: number, count: number) => void) {
    // allocUnsafeSlow: a buffer of its own, never a slice of Node's shared pool.
    this.buffer = Buffer.allocUnsafeSlow(RX_BATCH * RX_SLOT_SIZE);
    this.lengths = new Int32Array(RX_BATCH);
    this.handle = addon.rxCreate(this.buffer, this.lengths, RX_SLOT_SIZE, RX_BATCH, RX_HEADROOM, VNET_HDR_LEN, onBatch);
  }

  frameOffset(slot: number): number {
    return slot * RX_SLOT_SIZE + RX_HEADROOM;
  }

  addPort(portId: number, fd: number): void {
    addon.rxAddPort(this.handle, portId, fd);
  }

  removePort(portId: number): boolean {
    return addon.rxRemovePort(this.handle, portId) === 1;
  }

  /** Stops or restarts reading a port without forgetting it (the egress shaper). False if the port is unknown. */
  setPaused(portId: number, paused: boolean): boolean {
    return addon.rxPausePort(this.handle, portId, paused ? 1 : 0) === 1;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    addon.rxClose(this.handle);
  }
}
