/**
 * What clients of POST /v1/captures (the `vsw capture` command first) share
 * with the daemon: the names of points and formats, the bounds, and the
 * headers and trailers around the streamed file. Values only, loading
 * nothing heavy; the request's type is src/service/capture.ts's.
 */
export { CAPTURE_POINT_NAMES, DEFAULT_SNAPLEN, type CapturePointName } from '../switch/capture.js';
export { CAPTURE_FORMATS, formatForFileName, type CaptureFormat } from '../capture/writer.js';

export const MAX_CAPTURE_COUNT = 1_000_000_000;

/** Response headers: what is being captured, at which points. */
export const CAPTURE_HEADERS = { target: 'vsw-capture-target', points: 'vsw-capture-points' } as const;

/** Trailers: frames written, frames lost, how it ended (CaptureEnd), and a sentence when the client did not end it. */
export const CAPTURE_TRAILERS = { frames: 'vsw-capture-frames', lost: 'vsw-capture-lost', end: 'vsw-capture-end', message: 'vsw-capture-message' } as const;

/** How a capture ended: its count reached, its client gone, its endpoint or network gone, the daemon stopping. */
export type CaptureEnd = 'count' | 'client' | 'target' | 'daemon';
