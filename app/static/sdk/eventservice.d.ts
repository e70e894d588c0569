// TypeScript declarations of /sdk/eventservice.js (the same API; docs/uploader-browser.md).

/** What onError receives: an ERROR answer of the server, or a refusal by the library itself. */
export interface UploaderError {
  /** `invalid_event`, `queue_full`, `closed`, `storage_full` (a warning: the batch is still sent), or a server code (`invalid_batch`, `too_large`, ...). */
  error: string;
  message: string;
  details: Array<{ index: number; field: string; message: string }>;
  /** The batch the answer was about; null for a refusal of one event. */
  batch_id: string | null;
}

export type EventData = { [key: string]: unknown };

export interface UploaderOptions {
  /** Base URL of the service; default: the origin this module was loaded from. */
  endpoint?: string;
  /** An ingest token, when the service has INGEST_TOKENS set. */
  token?: string;
  /** Default: one per tab, kept in sessionStorage (a reload continues it). */
  sessionId?: string;
  /** A batch is sealed at this many events (default 50)... */
  flushEvents?: number;
  /** ...or this many milliseconds after its first event (default 1000). */
  flushMs?: number;
  /** Where sealed batches wait for their ACK (default "local": localStorage). */
  storage?: "local" | "memory";
  /** Beyond this many unACKed events track() refuses through onError (default 10000). */
  maxQueueEvents?: number;
  onError?: (err: UploaderError) => void;
  // Advanced tuning (defaults in DEFAULTS):
  maxBatchBytes?: number;
  maxInflightFrames?: number;
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  reconnectGrowFactor?: number;
  connectTimeoutMs?: number;
  beaconQuotaBytes?: number;
  maxNameChars?: number;
  maxDataBytes?: number;
  maxDataDepth?: number;
}

export interface Uploader {
  /** SESSION_START now; false when refused (onError said why). */
  start(data?: EventData): boolean;
  /** EVENT `name` now; false when refused (onError said why). */
  track(name: string, data?: EventData): boolean;
  /** SESSION_END now; false when refused. */
  end(data?: EventData): boolean;
  /** Resolves once every event tracked before the call is ACKed (or refused by an ERROR). */
  flush(): Promise<void>;
  /** Events tracked and not yet ACKed. */
  readonly pending: number;
  /** The session in use (lower case). */
  readonly sessionId: string;
  /** Stop sending; sealed batches stay in storage and are resent by the next uploader of the origin. */
  close(): void;
}

export declare const DEFAULTS: Readonly<Required<Omit<UploaderOptions, "endpoint" | "token" | "sessionId" | "onError">>>;

export declare function createUploader(options?: UploaderOptions): Uploader;

// The building blocks createUploader() joins, exported so that each can be used and tested alone.

/** null when the event passes the server's field rules, else the refusal onError would receive. */
export declare function checkEvent(name: string | undefined, data: unknown, opts?: typeof DEFAULTS): UploaderError | null;

export interface BatchStore {
  readonly durable: boolean;
  put(key: string, value: string): void;
  get(key: string): string | null;
  drop(key: string): void;
  keys(): string[];
}

/** localStorage ("local", falling back to memory where it is unavailable) or a Map ("memory"). */
export declare function openStorage(kind: "local" | "memory"): BatchStore;

export interface SealedBatch {
  readonly id: string;
  readonly key: string;
  readonly count: number;
  /** The /ws frame: {"batch_id","events"}. */
  readonly frame: string;
}

/** The sealed batches of one session, in seal order, loaded from the store at construction. */
export declare class BatchQueue {
  constructor(sessionId: string, store: BatchStore);
  readonly sessionId: string;
  readonly batches: SealedBatch[];
  /** Events in the queue. */
  readonly events: number;
  seal(events: object[]): SealedBatch;
  get(id: string): SealedBatch | undefined;
  remove(id: string): SealedBatch | null;
}

/** Milliseconds before reconnect attempt `attempt` (0-based): full jitter, capped. */
export declare function backoffMs(attempt: number, opts?: typeof DEFAULTS): number;

export declare class SocketTransport {
  constructor(
    url: string,
    opts: typeof DEFAULTS,
    handlers: { open(): void; message(msg: unknown): void; close(): void },
  );
  readonly open: boolean;
  start(): void;
  healthy(): void;
  now(): void;
  drop(): void;
  send(text: string): void;
  stop(): void;
}

/** Sends frames with navigator.sendBeacon within the quota; returns how many were handed over. */
export declare function sendBeacons(url: string, frames: string[], quotaBytes: number): number;

/** Resends the stored batches of sessions no live uploader holds; returns how many were ACKed. */
export declare function claimLeftovers(
  endpoint: string,
  token: string | undefined,
  store: BatchStore,
  onError: (err: UploaderError) => void,
): Promise<number>;

export declare function uuid4(): string;
