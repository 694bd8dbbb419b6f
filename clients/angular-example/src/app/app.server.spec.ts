import { mergeApplicationConfig } from "@angular/core";
import { type BootstrapContext, bootstrapApplication } from "@angular/platform-browser";
import { provideServerRendering, renderApplication } from "@angular/platform-server";
import { provideChangesync } from "../changesync";
import { FakeEventSource } from "../testing/fake-event-source";
import { App } from "./app";
import { appConfig } from "./app.config";

describe("App, rendered on the server", () => {
  it("renders the page without opening a stream", async () => {
    FakeEventSource.reset();
    const serverConfig = mergeApplicationConfig(appConfig, {
      providers: [provideServerRendering(), provideChangesync({ baseUrl: "https://sync.test", EventSource: FakeEventSource })],
    });
    const html = await renderApplication(
      (context: BootstrapContext) => bootstrapApplication(App, serverConfig, context),
      { document: "<html><head></head><body><app-root></app-root></body></html>", url: "/?flow=demo-flow" },
    );
    expect(html).toContain("Loading the flow…");
    expect(FakeEventSource.instances).toHaveLength(0);
  });
});
