/**
 * How long to wait before another attempt: the server's `Retry-After`, else a capped exponential backoff.
 */

/**
 * The seconds a `Retry-After` value asks for (RFC 9110 §10.2.3: delay-seconds or an HTTP-date);
 * undefined when it is absent or neither. A date in the past is 0.
 */
export function parseRetryAfterS(value: string | null | undefined, nowMs: number = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text);
  // Only the date forms: Date.parse alone would also take "2" or "-1" as a year.
  if (!/^[A-Za-z]{3},? /.test(text)) return undefined;
  const atMs = Date.parse(text);
  if (Number.isNaN(atMs)) return undefined;
  return Math.max(0, Math.ceil((atMs - nowMs) / 1000));
}

/**
 * The wait before attempt `attempt + 1` when the server named none: `baseMs` doubled per attempt,
 * capped at `maxMs`, then drawn from its upper half so that publishers refused together spread out.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceilingMs = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return ceilingMs / 2 + (random() * ceilingMs) / 2;
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
