/**
 * `provideChangesync`: where changesync runs and how the app authenticates, for every
 * `FlowEventsService` of the application.
 */
import { HttpClient } from "@angular/common/http";
import { type EnvironmentProviders, InjectionToken, inject, makeEnvironmentProviders } from "@angular/core";
import type { FlowEventsOptions } from "@changesync/client";
import { firstValueFrom } from "rxjs";

/**
 * The client's options, except those that belong to one flow (`flowId`, `lastEventId`) and
 * `connect`, which the service decides: it connects in the browser only, once its listeners are in place.
 */
export type ChangesyncConfig = Omit<FlowEventsOptions, "flowId" | "lastEventId" | "connect">;

export const CHANGESYNC_CONFIG = new InjectionToken<ChangesyncConfig>("CHANGESYNC_CONFIG");

/**
 * Configures changesync for the application.
 *
 * Pass the configuration, or a factory that runs in an injection context, so that it can
 * `inject()` what it needs (`httpToken` does so for `HttpClient`):
 *
 * ```ts
 * provideChangesync(() => ({ baseUrl: "https://sync.example.com", getToken: httpToken("/api/changesync/token") }))
 * ```
 */
export function provideChangesync(config: ChangesyncConfig | (() => ChangesyncConfig)): EnvironmentProviders {
  return makeEnvironmentProviders([
    { provide: CHANGESYNC_CONFIG, useFactory: typeof config === "function" ? config : () => config },
  ]);
}

/**
 * A `getToken` that asks the app's back end for a changesync token with `HttpClient`, so that the
 * app's interceptors (session headers, XSRF, error handling) apply. The answer's body is the token.
 * Call it in an injection context, e.g. in a `provideChangesync` factory; it needs `provideHttpClient()`.
 */
export function httpToken(url: string): () => Promise<string> {
  const http = inject(HttpClient);
  return async () => (await firstValueFrom(http.get(url, { responseType: "text" }))).trim();
}
