/** A worker link for dispatcher tests: records every Admit and Abort, and emits the deltas a test asks for. */
import { common, worker } from '@inlaid/proto';
import type { WorkerLink } from '../scheduling/ticket';
import { AsyncQueue } from '../workers/async-queue';

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
  /** Emits a delta with `ids` for a run (the stream ends with `finish` if given). */
  emit(runId: string, ids: number[], completion: number, finish = common.FinishReason.FINISH_REASON_UNSPECIFIED): void {
    this.queues.get(runId)?.push({ requestId: runId, text: ids.map(String).join(' '), tokenIds: ids, finishReason: finish, promptTokens: 0, completionTokens: completion, cachedTokens: 0 });
    if (finish !== common.FinishReason.FINISH_REASON_UNSPECIFIED) this.queues.get(runId)?.end();
  }
}
