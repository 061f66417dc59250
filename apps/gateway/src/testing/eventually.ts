/** Waiting in tests on real sockets and timers. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves once `check` holds (polled every 5 ms), or fails after `ms` naming `what`. */
export async function eventually(check: () => boolean, what: string, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(5);
  }
}
