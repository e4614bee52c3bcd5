import type { Logger } from 'pino';

/**
 * Undo steps of a multi-step operation, run in reverse when a later step
 * fails, so a refused request leaves no TAP, address or port behind. An undo
 * step that fails is logged and the others still run.
 */
export class Rollback {
  private readonly steps: { what: string; undo: () => unknown }[] = [];

  constructor(private readonly logger: Logger) {}

  add(what: string, undo: () => unknown): void {
    this.steps.push({ what, undo });
  }

  async run(): Promise<void> {
    for (const step of this.steps.reverse()) {
      try {
        await step.undo();
      } catch (err) {
        this.logger.error({ err }, `rollback: could not ${step.what}`);
      }
    }
    this.steps.length = 0;
  }
}
