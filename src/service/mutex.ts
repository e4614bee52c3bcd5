/**
 * A minimal async mutex. Every mutation of the daemon's state runs under it,
 * because a mutation awaits host commands midway (ip, tapOpen) and two
 * interleaved requests could otherwise pick the same IP, ifname or port id.
 * NetworkService holds the one instance and takes it around each call into a
 * sub-service; the sub-services never see it, so no call takes it twice.
 */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  async run<T>(task: () => Promise<T>): Promise<T> {
    const previous = this.tail;
    let release!: () => void;
    this.tail = new Promise<void>((resolve) => (release = resolve));
    await previous;
    try {
      return await task();
    } finally {
      release();
    }
  }
}
