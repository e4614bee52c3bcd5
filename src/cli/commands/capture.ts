/**
 * `vsw capture ENDPOINT|NETWORK`: the daemon streams a pcap or pcapng file of
 * the frames it switches (POST /v1/captures), and this writes it to a file or
 * to stdout, whole frames only, until -c N frames, Ctrl-C, or the daemon
 * ends it; then it says on stderr how many frames it wrote, as tcpdump does.
 */
import { closeSync, createWriteStream, existsSync, ftruncateSync, openSync, statSync, unlinkSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import type { Writable } from 'node:stream';
import { Command } from 'commander';
import { CaptureFramer } from '../../capture/framing.js';
import {
  CAPTURE_FORMATS,
  CAPTURE_HEADERS,
  CAPTURE_POINT_NAMES,
  CAPTURE_TRAILERS,
  DEFAULT_SNAPLEN,
  MAX_CAPTURE_COUNT,
  formatForFileName,
  type CaptureEnd,
  type CaptureFormat,
  type CapturePointName,
} from '../../service/capture-api.js';
import type { StartCaptureRequest } from '../../service/capture-routes.js';
import { CliError } from '../errors.js';
import { clientOf, leafSocketOption } from './common.js';

interface CaptureOptions {
  point: string;
  count?: string;
  write?: string;
  format?: string;
  snaplen?: string;
}

/** Where the file goes: a path, or stdout. */
export type CaptureDestination = { path: string } | { stdout: true };

const EXAMPLES = [
  '',
  'Examples:',
  '  vsw capture web1 -c 10 -w /tmp/web1.pcap          # ten frames in or out of endpoint web1',
  '  vsw capture blue --point drop -w /tmp/drops.pcapng # what vsw dropped on network blue, each with its reason',
  '  vsw capture web1 | tshark -r -                      # watch it live',
  '',
  'Points: ingress (a frame as it enters vsw from the port), egress (as vsw queues it to the port: after',
  'policy and NAT, before VXLAN encapsulation), drop (a frame vsw dropped there; pcapng says why).',
  'pcapng names each port and gives every frame its point (and a drop its reason) as a comment.',
].join('\n');

export function captureCommand(): Command {
  return new Command('capture')
    .description('record the frames of an endpoint or of a network into a pcap or pcapng file, where tcpdump cannot look: after policy, before encapsulation, and the frames vsw dropped')
    .argument('<target>', 'an endpoint (id or name) or a network (name)')
    .option('--point <points>', `where: ${CAPTURE_POINT_NAMES.join(', ')}, or a comma list`, 'ingress,egress')
    .option('-c, --count <n>', 'stop after N frames (default: until Ctrl-C)')
    .option('-w, --write <file>', 'write to FILE, or - for stdout (default: stdout when it is not a terminal)')
    .option('--format <format>', `${CAPTURE_FORMATS.join(' or ')} (default: pcapng for a *.pcapng file, else pcap)`)
    .option('-s, --snaplen <bytes>', `keep at most this many bytes of each frame (default ${DEFAULT_SNAPLEN})`)
    .addOption(leafSocketOption())
    .addHelpText('after', EXAMPLES)
    .action(async (target: string, opts: CaptureOptions, command: Command) => {
      const destination = captureDestination(opts.write, process.stdout.isTTY === true);
      const request = captureRequest(target, opts, destination);
      const file = 'path' in destination ? openCaptureFile(destination.path) : null;
      let response: IncomingMessage;
      try {
        response = await clientOf(command).postStream('/captures', request);
      } catch (err) {
        file?.discard();
        throw err;
      }
      const out = file === null ? process.stdout : file.take();
      const where = 'path' in destination ? destination.path : 'stdout';
      process.stderr.write(`capturing ${String(response.headers[CAPTURE_HEADERS.target])} at ${String(response.headers[CAPTURE_HEADERS.points])}, writing ${request.format} to ${where}\n`);
      const result = await streamCapture(response, out);
      process.stderr.write(`${summary(result)}\n`);
      if (result.message !== null) throw new CliError(`the capture ended early: ${result.message}`);
    });
}

/** -w, or stdout when it is not a terminal (binary on a terminal helps no one). */
export function captureDestination(write: string | undefined, stdoutIsTerminal: boolean): CaptureDestination {
  if (write === '-') return { stdout: true };
  if (write !== undefined) return { path: write };
  if (stdoutIsTerminal) throw new CliError('vsw capture writes a binary capture file: pass -w FILE.pcap, or pipe it into a reader (vsw capture ... | tshark -r -).');
  return { stdout: true };
}

/** The request body from the command line; every mistake is one sentence. */
export function captureRequest(target: string, opts: CaptureOptions, destination: CaptureDestination): StartCaptureRequest & { format: CaptureFormat } {
  const points = opts.point.split(',').map((p) => p.trim());
  const unknown = points.find((p) => !(CAPTURE_POINT_NAMES as readonly string[]).includes(p));
  if (unknown !== undefined || points.length === 0) {
    throw new CliError(`--point takes ${CAPTURE_POINT_NAMES.join(', ')} or a comma list of them such as ingress,drop; got ${JSON.stringify(opts.point)}.`);
  }
  let format: CaptureFormat;
  if (opts.format !== undefined) {
    if (!(CAPTURE_FORMATS as readonly string[]).includes(opts.format)) throw new CliError(`--format takes ${CAPTURE_FORMATS.join(' or ')}; got ${JSON.stringify(opts.format)}.`);
    format = opts.format as CaptureFormat;
  } else {
    format = 'path' in destination ? formatForFileName(destination.path) : 'pcap';
  }
  const request: StartCaptureRequest & { format: CaptureFormat } = { target, points: [...new Set(points)] as CapturePointName[], format };
  if (opts.count !== undefined) request.count = wholeNumber(opts.count, '-c', 'frames', MAX_CAPTURE_COUNT);
  if (opts.snaplen !== undefined) request.snaplen = wholeNumber(opts.snaplen, '-s', 'bytes', DEFAULT_SNAPLEN);
  return request;
}

function wholeNumber(text: string, flag: string, unit: string, max: number): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= max)) throw new CliError(`${flag} takes a whole number of ${unit} from 1 to ${max}; got ${JSON.stringify(text)}.`);
  return n;
}

/**
 * The file, opened before the daemon is asked (so a path that cannot be
 * written fails at once, in one sentence) without truncating it; emptied
 * once the capture starts, or removed again if vsw made it and the daemon
 * refused.
 */
function openCaptureFile(path: string): { take(): Writable; discard(): void } {
  const existed = existsSync(path);
  let fd: number;
  try {
    if (existed && statSync(path).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    fd = openSync(path, 'a');
  } catch (err) {
    throw new CliError(fileError(path, err as NodeJS.ErrnoException));
  }
  return {
    take: () => {
      ftruncateSync(fd, 0);
      return createWriteStream('', { fd });
    },
    discard: () => {
      closeSync(fd);
      if (!existed) unlinkSync(path);
    },
  };
}

export function fileError(path: string, err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'EISDIR':
      return `${path} is a directory: give -w a file name such as ${path.replace(/\/$/, '')}/capture.pcap.`;
    case 'ENOENT':
    case 'ENOTDIR':
      return `cannot write ${path}: its directory does not exist; create it or pick another -w path.`;
    case 'EACCES':
    case 'EPERM':
      return `cannot write ${path}: permission denied; pick a path you may write with -w.`;
    case 'EROFS':
      return `cannot write ${path}: the file system is read-only; pick another -w path.`;
    default:
      return `cannot write ${path} (${err.code ?? err.message}): pick another -w path.`;
  }
}

interface CaptureResult {
  /** Whole frames written. */
  frames: number;
  /** Frames the daemon could not keep (from its trailer; 0 when it sent none). */
  lost: number;
  end: CaptureEnd;
  /** Why the daemon ended it, when that was not -c: an error for the exit status. */
  message: string | null;
}

/**
 * Copies whole frames from the response to `out` until the daemon ends the
 * stream or the user stops it (SIGINT, SIGTERM, a closed pipe).
 */
function streamCapture(response: IncomingMessage, out: Writable): Promise<CaptureResult> {
  const framer = new CaptureFramer();
  return new Promise<CaptureResult>((resolve) => {
    let end: CaptureEnd | null = null;
    let message: string | null = null;
    let lost = 0;
    let done = false;
    const finish = (how: CaptureEnd): void => {
      if (done) return;
      done = true;
      end = how;
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      response.destroy();
      const settle = (): void => resolve({ frames: framer.frames, lost, end: end!, message });
      if (out === process.stdout) {
        // Not ended: stdout stays open for the summary's exit; a drain is enough to have it all written.
        if (out.writableLength === 0) settle();
        else out.once('drain', settle);
      } else {
        out.end(settle);
      }
    };
    const stop = (): void => finish('client');
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    out.on('error', () => finish('client'));
    response.on('data', (chunk: Buffer) => {
      if (done) return;
      let whole: Buffer;
      try {
        whole = framer.push(chunk);
      } catch (err) {
        message = `the daemon sent something that is not a capture file (${(err as Error).message}).`;
        finish('daemon');
        return;
      }
      if (whole.length > 0 && !out.write(whole)) {
        response.pause();
        out.once('drain', () => response.resume());
      }
    });
    response.on('end', () => {
      const trailers = response.trailers;
      lost = Number(trailers[CAPTURE_TRAILERS.lost] ?? 0);
      const how = (trailers[CAPTURE_TRAILERS.end] as CaptureEnd | undefined) ?? 'daemon';
      if (how !== 'count') message = trailers[CAPTURE_TRAILERS.message] ?? 'the daemon closed the stream without saying why; see its log.';
      finish(how);
    });
    response.on('error', () => undefined);
    response.on('close', () => {
      if (done) return;
      // Closed before its end: the daemon went away without ending the capture.
      message = 'the daemon went away (it stopped or crashed); see its log.';
      finish('daemon');
    });
  });
}

function summary(r: CaptureResult): string {
  const frames = `${r.frames} frame${r.frames === 1 ? '' : 's'} captured`;
  if (r.lost === 0) return `${frames}.`;
  return `${frames}, ${r.lost} lost (more than the capture could pass on: capture fewer points, a smaller -s, or write to a faster place).`;
}
