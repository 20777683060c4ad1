// Message transports (PROTOCOL §2): one frame per message, in order. A transport is small:
// `start` hands it the connection's callbacks, `send` queues one message, `close` ends it.

/** What a transport reports to its connection. */
export interface TransportEvents {
  /** One inbound message. */
  message(data: Uint8Array): void;
  /** The peer broke the transport's framing (a text WebSocket message, a bad sealed message). */
  protocolError(message: string): void;
  /** The transport closed (either side, any cause). Called at most once. */
  closed(reason: string): void;
}

/** A message transport. */
export interface Transport {
  start(events: TransportEvents): void;
  send(data: Uint8Array): void;
  close(): void;
}

/** The WebSocket class to use (the browser's, Node 22's or Bun's global, or the `ws` package's). */
export type WebSocketClass = new (url: string | URL, protocols?: string | string[]) => WebSocket;

/** Opens a WebSocket to `url` and resolves once it is open. */
export function openWebSocket(url: string | URL, WebSocketImpl?: WebSocketClass): Promise<Transport> {
  const Impl = WebSocketImpl ?? (globalThis as { WebSocket?: WebSocketClass }).WebSocket;
  if (Impl === undefined) {
    return Promise.reject(new Error("no WebSocket class: pass one (Node 20: run with --experimental-websocket)"));
  }
  return new Promise((resolve, reject) => {
    const ws = new Impl(url);
    ws.binaryType = "arraybuffer";
    const failed = () => reject(new Error(`WebSocket to ${String(url)} failed to open`));
    ws.addEventListener("error", failed, { once: true });
    ws.addEventListener(
      "open",
      () => {
        ws.removeEventListener("error", failed);
        resolve(webSocketTransport(ws));
      },
      { once: true },
    );
  });
}

/** A transport over an open WebSocket: one binary message per frame; text is an error. */
export function webSocketTransport(ws: WebSocket): Transport {
  ws.binaryType = "arraybuffer";
  let events: TransportEvents | undefined;
  let done = false;
  const closed = (reason: string) => {
    if (done) return;
    done = true;
    events?.closed(reason);
  };
  return {
    start(e) {
      events = e;
      ws.addEventListener("message", (m: MessageEvent) => {
        if (done) return;
        if (m.data instanceof ArrayBuffer) e.message(new Uint8Array(m.data));
        else if (ArrayBuffer.isView(m.data)) e.message(new Uint8Array(m.data.buffer, m.data.byteOffset, m.data.byteLength));
        else e.protocolError("text message on the bunite socket");
      });
      ws.addEventListener("close", (c: CloseEvent) => closed(`WebSocket closed (${c.code})`));
      ws.addEventListener("error", () => closed("WebSocket error"));
      if (ws.readyState >= 2) closed("WebSocket closed");
    },
    send(data) {
      if (!done && ws.readyState === 1) ws.send(data);
    },
    close() {
      if (ws.readyState <= 1) ws.close(1000);
      closed("closed locally");
    },
  };
}

/** An in-process pair of transports, for tests and for peers in one page. Messages sent
 * before `close` are delivered before the other end sees it close, as on a socket. */
export function memoryPair(): [Transport, Transport] {
  const ends: Array<{ events?: TransportEvents; queue: Uint8Array[]; closing: boolean; done: boolean }> = [
    { queue: [], closing: false, done: false },
    { queue: [], closing: false, done: false },
  ];
  const make = (me: number): Transport => {
    const self = ends[me]!;
    const other = ends[1 - me]!;
    return {
      start(e) {
        self.events = e;
        for (const m of self.queue.splice(0)) queueMicrotask(() => self.done || e.message(m));
      },
      send(data) {
        if (self.closing || other.closing) return;
        const copy = data.slice();
        if (other.events) queueMicrotask(() => other.done || other.events!.message(copy));
        else other.queue.push(copy);
      },
      close() {
        for (const end of [self, other]) end.closing = true;
        // After the deliveries already queued (microtasks run in order).
        queueMicrotask(() => {
          for (const end of [self, other]) {
            if (!end.done) {
              end.done = true;
              end.events?.closed("memory transport closed");
            }
          }
        });
      },
    };
  };
  return [make(0), make(1)];
}
