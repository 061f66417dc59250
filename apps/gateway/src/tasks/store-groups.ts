/**
 * Which workers share a re-quantization (pure). Workers that report the same checkpoint store id
 * (WorkerInfo.checkpoint.storeId) serve from one store: one of them quantizes, the others follow. A worker
 * without a checkpoint status is a group of its own (it answers FAILED_PRECONDITION, as before).
 *
 * The quantizer of a group is its first worker in WORKER_ADDRS order: deterministic, so a restarted gateway
 * asks the same worker again (and attaches to its running job); when that worker is down, the next one in
 * order takes over (failover).
 */
export interface WorkerWithInfo<C> {
  readonly conn: C;
  readonly addr: string;
  readonly storeId: string | null;
  readonly version: number | null;
}

export interface StoreGroup<C> {
  readonly storeId: string | null;
  readonly quantizer: WorkerWithInfo<C>;
  readonly followers: readonly WorkerWithInfo<C>[];
}

/** Groups in order of their first worker; `workers` must be in WORKER_ADDRS order. */
export function storeGroups<C>(workers: readonly WorkerWithInfo<C>[]): StoreGroup<C>[] {
  const byStore = new Map<string, WorkerWithInfo<C>[]>();
  const groups: WorkerWithInfo<C>[][] = [];
  for (const w of workers) {
    if (w.storeId === null) {
      groups.push([w]);
      continue;
    }
    const g = byStore.get(w.storeId);
    if (g !== undefined) g.push(w);
    else {
      const fresh = [w];
      byStore.set(w.storeId, fresh);
      groups.push(fresh);
    }
  }
  return groups.map(([quantizer, ...followers]) => ({ storeId: quantizer?.storeId ?? null, quantizer: quantizer as WorkerWithInfo<C>, followers }));
}
