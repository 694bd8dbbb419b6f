import { provideHttpClient, withFetch } from "@angular/common/http";
import { type ApplicationConfig, provideBrowserGlobalErrorListeners, provideZonelessChangeDetection } from "@angular/core";
import { httpToken, provideChangesync } from "../changesync";

/** The app's back end mints a 5-minute changesync token for the signed-in user at this URL. */
const TOKEN_URL = "/api/changesync/token";

export const appConfig: ApplicationConfig = {
  providers: [
    provideBrowserGlobalErrorListeners(),
    provideZonelessChangeDetection(),
    provideHttpClient(withFetch()),
    provideChangesync(() => ({
      // changesync proxied on the app's origin; otherwise its URL, with CORS allowing this origin.
      baseUrl: "",
      // Fetched with HttpClient at every (re)connection, so the app's interceptors apply.
      getToken: httpToken(TOKEN_URL),
    })),
  ],
};
