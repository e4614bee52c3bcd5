/**
 * Every failure of the host layer. The message is one sentence that says what
 * is wrong and what to do, because it travels unchanged to API clients and to
 * the CLI; `command` and `stderr` keep the raw details for logs.
 */
export class HostError extends Error {
  override name = 'HostError';
  /** The command line that failed, when a command failed. */
  readonly command?: string;
  /** Its standard error, trimmed. */
  readonly stderr?: string;

  constructor(message: string, details: { command?: string; stderr?: string; cause?: unknown } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    if (details.command !== undefined) this.command = details.command;
    if (details.stderr !== undefined) this.stderr = details.stderr;
  }
}
