/**
 * One request as the dispatcher tracks it from enqueue to finish: its prepared form, the tokens it has
 * produced so far (kept for recompute-resume), its current run on a worker, and the event stream its
 * consumer (GenerationService) reads. `admitted` settles once: with the first worker, or with the error
 * that refused the request before it ever ran.
 */
import { worker } from '@inlaid/proto';
import { AsyncQueue } from '../workers/async-queue';
import type { PreparedRequest } from './resume';

export type TicketEvent =
  /** The request (re)started on `worker`. */
  | { readonly kind: 'admitted'; readonly worker: string }
  /** Output, already rebased onto the original request (resume.ts). */
  | { readonly kind: 'delta'; readonly delta: worker.TokenDelta };

/** What a worker link must offer the dispatcher (WorkerConnection does). */
export interface WorkerLink {
  readonly addr: string;
  admit(admit: worker.Admit): AsyncQueue<worker.TokenDelta>;
  abort(requestId: string): void;
}

export interface Run {
  readonly link: WorkerLink;
  readonly requestId: string;
  /** Tokens produced before this run started. */
  readonly base: number;
}

export class Ticket {
  readonly events = new AsyncQueue<TicketEvent>();
  readonly generated: number[] = [];
  run: Run | null = null;
  readonly admitted: Promise<string>;
  private settle: { resolve: (w: string) => void; reject: (e: Error) => void } | null = null;

  constructor(readonly req: PreparedRequest, readonly task: string) {
    this.admitted = new Promise<string>((resolve, reject) => (this.settle = { resolve, reject }));
    this.admitted.catch(() => undefined); // a refusal is read through `admitted` by whoever awaits it
  }

  /** Whether any output reached the consumer (then a lost worker cannot be hidden from it). */
  get delivered(): boolean {
    return this.generated.length > 0;
  }

  started(addr: string): void {
    this.events.push({ kind: 'admitted', worker: addr });
    this.settle?.resolve(addr);
    this.settle = null;
  }

  /** Ends the ticket with `err`: refused before it ran, or failed mid-stream. */
  fail(err: Error): void {
    if (this.settle !== null) this.settle.reject(err);
    this.settle = null;
    this.events.fail(err);
  }

  /** Ends the event stream normally (finished, or cancelled by its consumer). */
  end(): void {
    this.settle?.reject(new Error('request ended before it was admitted'));
    this.settle = null;
    this.events.end();
  }
}
