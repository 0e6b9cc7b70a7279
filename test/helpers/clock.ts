/**
 * A clock the tests move (STYLE: time is an input): the real time plus an offset that only grows.
 * Pass `now` to startTestServer; `advance` instead of sleeping until Workyard thinks a token
 * expires. A real wait stays only where the provider itself must see the token expire.
 */
export interface TestClock {
  now(): number;
  advance(ms: number): void;
}

export function testClock(): TestClock {
  let offset = 0;
  return {
    now: () => Date.now() + offset,
    advance(ms) {
      offset += ms;
    },
  };
}
