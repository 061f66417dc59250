/** A worker link for dispatcher tests: records every Admit and Abort, and emits the deltas a test asks for. */
import { common, worker } from '@inlaid/proto';
import type { WorkerLink } from '../scheduling/ticket';
import { AsyncQueue } from '../workers/async-queue';

/** The request a worker-side run id belongs to (`<id>~r<n>`, resume.ts runRequestId); an id without `~` is its own. */
export function requestOf(runId: string): string {
  const i = runId.lastIndexOf('~');
  return i < 0 ? runId : runId.slice(0, i);
}

export class FakeLink implements WorkerLink {
  readonly admits: worker.Admit[] = [];
  readonly aborts: string[] = [];
  readonly queues = new Map<string, AsyncQueue<worker.TokenDelta>>();
  constructor(readonly addr: string) {}
  admit(a: worker.Admit): AsyncQueue<worker.TokenDelta> {
    const q = new AsyncQueue<worker.TokenDelta>();
    this.admits.push(a);
    this.queues.set(a.requestId, q);
    return q;
  }
  abort(id: string): void {
    this.aborts.push(id);
    this.queues.get(id)?.end();
  }
  /** The worker-side id of request `id`'s latest run on this link (undefined: none). */
  runOf(id: string): string | undefined {
    return this.admits.map((x) => x.requestId).filter((r) => requestOf(r) === id).at(-1);
  }
  /** Emits a delta with `ids` for request `id`'s latest run here (the stream ends with `finish` if given). */
  emit(id: string, ids: number[], completion: number, finish = common.FinishReason.FINISH_REASON_UNSPECIFIED): void {
    const runId = this.runOf(id) ?? id;
    this.queues.get(runId)?.push({ requestId: runId, text: ids.map(String).join(' '), tokenIds: ids, finishReason: finish, promptTokens: 0, completionTokens: completion, cachedTokens: 0 });
    if (finish !== common.FinishReason.FINISH_REASON_UNSPECIFIED) this.queues.get(runId)?.end();
  }
  /** Ends request `id`'s latest run here with `err` (a RequestError, or the link failing). */
  fail(id: string, err: Error): void {
    this.queues.get(this.runOf(id) ?? id)?.fail(err);
  }
}
