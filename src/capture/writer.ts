/**
 * Capture files: what the daemon streams to `vsw capture` (and to any HTTP
 * client of POST /v1/captures), in the two formats tshark, tcpdump and
 * Wireshark read. Plain bytes in, file blocks out; nothing here knows ports or
 * sockets.
 */
export type CaptureFormat = 'pcap' | 'pcapng';
export const CAPTURE_FORMATS: readonly CaptureFormat[] = ['pcap', 'pcapng'];

/** Frames are Ethernet, as they leave and enter the TAPs (no vnet header). */
export const LINKTYPE_ETHERNET = 1;

/** One frame to write. */
export interface CapturedFrame {
  /** Wall-clock time, milliseconds since the epoch; the files keep microseconds. */
  timeMs: number;
  /** The interface it was seen on (pcapng gives each its own description block; pcap has none). */
  interfaceKey: number;
  /** The bytes captured: the frame, or its first snaplen bytes. */
  data: Uint8Array;
  /** How long the frame was. */
  originalLength: number;
  /** pcapng only: a packet comment. */
  comment?: string;
  /** pcapng only: which way it went on its interface. */
  direction?: 'inbound' | 'outbound';
}

export interface CaptureWriter {
  readonly format: CaptureFormat;
  /** The file's first bytes. */
  start(): Buffer;
  /** The blocks of one frame (and, in pcapng, of its interface the first time it appears). */
  frame(f: CapturedFrame): Buffer;
}

/** The format a file name asks for: pcapng for *.pcapng, else pcap. */
export function formatForFileName(path: string): CaptureFormat {
  return /\.pcapng$/i.test(path) ? 'pcapng' : 'pcap';
}

/** Microseconds since the epoch, exact in a double for the next 285 years. */
export function microseconds(timeMs: number): number {
  return Math.round(timeMs * 1000);
}
