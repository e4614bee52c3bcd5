import { conflict } from './errors.js';

/**
 * Hands out small integers, lowest free first, so that ids freed by a delete
 * are reused: the data plane sizes its tables by the largest id in use.
 */
export class IdPool {
  private readonly used = new Set<number>();

  constructor(
    private readonly first: number,
    private readonly last: number,
    private readonly what: string,
  ) {}

  allocate(): number {
    for (let id = this.first; id <= this.last; id++) {
      if (!this.used.has(id)) {
        this.used.add(id);
        return id;
      }
    }
    throw conflict(`no free ${this.what} id is left (all ${this.last - this.first + 1} are in use): remove some first.`);
  }

  /** Takes one particular id (restoring saved state, where ids must stay what they were). */
  take(id: number): void {
    if (!Number.isInteger(id) || id < this.first || id > this.last) throw new RangeError(`${this.what} id ${id} is outside ${this.first}-${this.last}`);
    if (this.used.has(id)) throw new RangeError(`${this.what} id ${id} is used twice`);
    this.used.add(id);
  }

  release(id: number): void {
    this.used.delete(id);
  }

  get size(): number {
    return this.used.size;
  }
}
