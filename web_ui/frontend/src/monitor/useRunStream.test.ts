import { describe, expect, it } from "vitest";
import { retryDelayMs, runStreamUrl } from "./useRunStream";

describe("the run stream's connection", () => {
  it("backs off exponentially up to a ceiling", () => {
    expect([1, 2, 3, 4, 5, 6, 20].map(retryDelayMs)).toEqual([500, 1000, 2000, 4000, 8000, 8000, 8000]);
  });

  it("asks for a snapshot first and for the missed events on a reconnect", () => {
    const location = { protocol: "https:", host: "flowkit.example:8443" } as Location;
    expect(runStreamUrl("r 1", null, location)).toBe("wss://flowkit.example:8443/ws/runs/r%201/");
    expect(runStreamUrl("r1", 42, location)).toBe("wss://flowkit.example:8443/ws/runs/r1/?after=42");
    expect(runStreamUrl("r1", 0, { ...location, protocol: "http:" })).toBe(
      "ws://flowkit.example:8443/ws/runs/r1/?after=0",
    );
  });
});
