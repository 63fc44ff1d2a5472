// The run's live stream: /ws/runs/<id>/ gives a snapshot then events in sequence
// order. A dropped connection is retried with exponential backoff and resumed with
// ?after=<last seq>, so the server sends exactly the events missed meanwhile.
// Frames are handed to the page at most once per animation frame: a chatty run
// costs one render per frame, not one per message.

import { useEffect, useRef, useState, type Dispatch } from "react";
import { freshEvents, type MonitorAction, type RunFrame } from "./runState";

export type ConnectionStatus = "connecting" | "live" | "reconnecting" | "refused";

export interface Connection {
  status: ConnectionStatus;
  /** Failed attempts in a row; 0 while live. */
  retries: number;
  message: string;
}

// Closed by the server for good: retrying cannot help (see trace_monitor/consumers.py).
const REFUSALS: Record<number, string> = {
  4401: "Your session ended: log in again to follow this run.",
  4403: "Your account may not watch runs.",
  4404: "There is no such run.",
};
const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 8000;
const HIDDEN_FLUSH_MS = 500;

export function retryDelayMs(retries: number): number {
  return Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** Math.max(0, retries - 1));
}

export function runStreamUrl(runId: string, afterSeq: number | null, location: Location = window.location) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const after = afterSeq === null ? "" : `?after=${afterSeq}`;
  return `${scheme}://${location.host}/ws/runs/${encodeURIComponent(runId)}/${after}`;
}

export function useRunStream(runId: string, dispatch: Dispatch<MonitorAction>): Connection {
  const [connection, setConnection] = useState<Connection>({
    status: "connecting",
    retries: 0,
    message: "",
  });
  const dispatchRef = useRef(dispatch);
  dispatchRef.current = dispatch;

  useEffect(() => {
    let alive = true;
    let socket: WebSocket | null = null;
    let retryTimer = 0;
    let frameRequest = 0;
    let retries = 0;
    // null until the first snapshot: until then a reconnect asks for a snapshot again.
    let lastSeq: number | null = null;
    let queue: RunFrame[] = [];

    let flushTimer = 0;
    const flush = () => {
      frameRequest = 0;
      flushTimer = 0;
      const frames = queue;
      queue = [];
      if (frames.length) dispatchRef.current({ type: "frames", frames });
    };
    const enqueue = (frame: RunFrame) => {
      queue.push(frame);
      if (frameRequest || flushTimer) return;
      // A hidden tab gets no animation frames: a timer keeps the queue short there.
      if (document.hidden) flushTimer = window.setTimeout(flush, HIDDEN_FLUSH_MS);
      else frameRequest = window.requestAnimationFrame(flush);
    };

    const scheduleRetry = () => {
      if (!alive) return;
      retries += 1;
      const delay = retryDelayMs(retries);
      setConnection({
        status: "reconnecting",
        retries,
        message: `Connection lost; retrying in ${Math.round(delay / 100) / 10} s.`,
      });
      retryTimer = window.setTimeout(connect, delay);
    };

    const onMessage = (message: MessageEvent) => {
      let frame: RunFrame;
      try {
        frame = JSON.parse(String(message.data)) as RunFrame;
      } catch {
        return;
      }
      if (frame.type === "snapshot") {
        lastSeq = frame.seq;
        enqueue(frame);
      } else if (frame.type === "events") {
        const { fresh, gap } = freshEvents(lastSeq ?? 0, frame.events);
        if (fresh.length) {
          lastSeq = fresh[fresh.length - 1].seq;
          enqueue({ type: "events", events: fresh });
        }
        // The server never skips a number; if frames were lost anyway, start over
        // from the last one applied.
        if (gap) socket?.close();
      } else if (frame.type === "samples") {
        enqueue(frame);
      }
    };

    function connect() {
      if (!alive) return;
      setConnection((current) => ({ ...current, status: retries ? "reconnecting" : "connecting" }));
      let current: WebSocket;
      try {
        current = new WebSocket(runStreamUrl(runId, lastSeq));
      } catch {
        scheduleRetry();
        return;
      }
      socket = current;
      current.onopen = () => {
        retries = 0;
        setConnection({ status: "live", retries: 0, message: "" });
      };
      current.onmessage = onMessage;
      current.onclose = (event) => {
        if (!alive || socket !== current) return;
        socket = null;
        const refusal = REFUSALS[event.code];
        if (refusal) {
          setConnection({ status: "refused", retries, message: refusal });
          return;
        }
        scheduleRetry();
      };
    }

    connect();
    return () => {
      alive = false;
      window.clearTimeout(retryTimer);
      if (frameRequest) window.cancelAnimationFrame(frameRequest);
      window.clearTimeout(flushTimer);
      socket?.close();
    };
  }, [runId]);

  return connection;
}
