/**
 * Errors the API turns into a 4xx answer. The message is the whole body
 * ({"error": message}), so it is one sentence: what is wrong, what to do.
 */
export class ApiError extends Error {
  constructor(
    readonly statusCode: 400 | 404 | 409 | 500 | 504,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string): ApiError => new ApiError(400, message);
export const notFound = (message: string): ApiError => new ApiError(404, message);
export const conflict = (message: string): ApiError => new ApiError(409, message);
/** Something vsw asked on the caller's behalf did not answer in time (a DHCP server on the LAN). */
export const upstreamTimeout = (message: string): ApiError => new ApiError(504, message);

/** Ends a message with a period, so messages built from parts read as one sentence. */
export function sentence(text: string): string {
  const trimmed = text.trim();
  return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
}
