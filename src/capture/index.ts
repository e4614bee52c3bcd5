/** Capture files (pcap, pcapng) and the framing of a capture stream. */
import { PcapWriter } from './pcap.js';
import { PcapngWriter, type InterfaceDescription } from './pcapng.js';
import type { CaptureFormat, CaptureWriter } from './writer.js';

export * from './writer.js';
export type { InterfaceDescription };

export interface CaptureWriterOptions {
  snaplen: number;
  /** pcapng: names the interface of a key the first time a frame of it is written. */
  describeInterface: (key: number) => InterfaceDescription;
  /** pcapng: the section header's shb_userappl. */
  application?: string;
}

export function createCaptureWriter(format: CaptureFormat, opts: CaptureWriterOptions): CaptureWriter {
  return format === 'pcapng' ? new PcapngWriter(opts.snaplen, opts.describeInterface, opts.application) : new PcapWriter(opts.snaplen);
}
