/** Reads SLO targets from Postgres: the slo_defaults row and the tasks that set their own. */
import { DataSource } from 'typeorm';
import { readSloDefaults, readTaskTargetRows } from '../scheduling/task-slo-rows';
import { targetsOfRow } from '../scheduling/task-slos';
import type { SloTargets, TargetsTable } from './slo';

export async function readTargets(db: DataSource): Promise<TargetsTable> {
  const d = await readSloDefaults(db);
  if (d === undefined) throw new Error('slo_defaults has no row; run the migrations');
  const defaults: SloTargets = { ...d, isDefault: true };
  const byTask = new Map<string, SloTargets>();
  for (const r of await readTaskTargetRows(db)) byTask.set(r.name, { ...targetsOfRow(r, defaults), isDefault: false });
  return { defaults, byTask };
}
