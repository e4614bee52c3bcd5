/** An error the CLI reports as `vsw: <message>` and exit status 1; the message is one sentence. */
export class CliError extends Error {
  override name = 'CliError';
}

/** The daemon could not be reached at all (no socket, nobody listening, no permission). */
export class UnreachableError extends CliError {
  override name = 'UnreachableError';
}

/** The daemon answered with an error status; `message` is its {"error"} sentence. */
export class DaemonError extends CliError {
  override name = 'DaemonError';

  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}
