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
  /**
   * True when the host itself failed (a tool missing, a command failing in a
   * way vsw does not recognise, a timeout) rather than the request being wrong:
   * the API answers those with 500, not 400.
   */
  readonly system: boolean;

  constructor(message: string, details: { command?: string; stderr?: string; cause?: unknown; system?: boolean } = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.system = details.system ?? false;
    if (details.command !== undefined) this.command = details.command;
    if (details.stderr !== undefined) this.stderr = details.stderr;
  }
}
