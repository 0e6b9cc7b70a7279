/**
 * A counting semaphore: at most `max` holders at once; the others wait in order. Bounds work that
 * costs a core or a connection (the egress gateway's upstream requests, builds).
 */
export class Slots {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly max: number) {}

  /** Whether taking a slot now would wait. */
  get busy(): boolean {
    return this.active >= this.max;
  }

  /** A slot; call what it returns (once) to give it back. */
  async take(): Promise<() => void> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.active -= 1;
    };
  }
}
