/**
 * Start-up training of the length predictor from recent request records in Postgres. Records hold token
 * counts, not prompt text, so the quantile/mean predictors learn fully and the prompt predictor learns its
 * count-based fallback and intercepts (it refines on prompt words online, from live traffic).
 */
import { RequestRecord } from '@inlaid/db';
import { LengthPredictor, LengthRecord, PromptPredictor } from '@inlaid/scheduling';
import { DataSource } from 'typeorm';

/** The most recent `limit` completed requests that produced output, oldest first. */
export async function recentLengthRecords(db: DataSource, limit: number): Promise<LengthRecord[]> {
  if (limit === 0) return [];
  const rows = await db
    .getRepository(RequestRecord)
    .createQueryBuilder('r')
    .select(['r.task', 'r.tokensIn', 'r.tokensOut'])
    .where('r.status = :s', { s: 'completed' })
    .andWhere('r.tokensIn > 0')
    .andWhere('r.tokensOut > 0')
    .orderBy('r.arrival', 'DESC')
    .limit(limit)
    .getMany();
  return rows.reverse().map((r) => ({ task: r.task, promptTokens: r.tokensIn, outputTokens: r.tokensOut }));
}

/** Feeds `records` to `predictor` (batch fit where it has one). */
export function trainPredictor(predictor: LengthPredictor, records: readonly LengthRecord[]): void {
  if (predictor instanceof PromptPredictor) {
    predictor.fit(records);
    return;
  }
  for (const r of records) predictor.observe(r.task, r.promptTokens, r.outputTokens, r.prompt);
}
