/**
 * The lifecycle of one request as it becomes a RequestRecord row (pure; times passed in). A timeline
 * closes exactly once, so a request is never recorded twice.
 */
import type { RequestRecord, RequestStatus } from '@inlaid/db';
import type { Api, FinishReason } from './generation.types';

export class RequestTimeline {
  private firstToken: Date | null = null;
  private tokensIn = 0;
  private tokensOut = 0;
  private worker: string | null = null;
  private closed = false;

  constructor(
    readonly id: string,
    private readonly task: string,
    private readonly api: Api,
    private readonly arrival: Date,
  ) {}

  routed(worker: string, promptTokens: number): void {
    this.worker = worker;
    this.tokensIn = promptTokens;
  }

  progress(completionTokens: number, promptTokens: number, at: Date): void {
    if (this.firstToken === null && completionTokens > 0) this.firstToken = at;
    this.tokensOut = Math.max(this.tokensOut, completionTokens);
    if (promptTokens > 0) this.tokensIn = promptTokens;
  }

  /** Returns the row to write, or null if the timeline was already closed. */
  close(status: RequestStatus, at: Date, finishReason: FinishReason | null, error: string | null): RequestRecord | null {
    if (this.closed) return null;
    this.closed = true;
    return {
      id: this.id,
      task: this.task,
      api: this.api,
      arrival: this.arrival,
      firstToken: this.firstToken,
      finish: at,
      tokensIn: this.tokensIn,
      tokensOut: this.tokensOut,
      status,
      finishReason,
      error,
      worker: this.worker,
    };
  }
}
