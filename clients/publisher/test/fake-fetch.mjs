// A stand-in for fetch that records each request and plays back scripted answers, one per request.

/** A JSON answer, as changesync sends them. */
export const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });

export const accepted = (id = "1795715181-1-0", flowId = "flow-1", type = "LOG_STREAM") =>
  json(202, { id, type, flowId });

/** An answer that never comes: the request hangs until its signal aborts, then rejects as fetch does. */
export const HANG = Symbol("hang");

/**
 * `fetch` that answers with `answers` in turn: a Response, an Error to throw (a network failure),
 * or HANG. `fetch.calls` holds each request: url, method, headers and the parsed JSON body.
 */
export function fakeFetch(...answers) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, method: init.method, headers: { ...init.headers }, body: JSON.parse(init.body) });
    const answer = answers.shift();
    if (answer === undefined) throw new Error(`unexpected request #${calls.length} to ${url}`);
    if (answer === HANG) {
      return new Promise((_, reject) => {
        const abort = () => reject(init.signal.reason ?? new DOMException("aborted", "AbortError"));
        if (init.signal.aborted) abort();
        else init.signal.addEventListener("abort", abort, { once: true });
      });
    }
    if (answer instanceof Error) throw answer;
    return answer;
  };
  fetch.calls = calls;
  return fetch;
}
