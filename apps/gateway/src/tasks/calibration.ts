/** Calibration data check (pure): JSONL, each line {"text": str} or {"messages": [...]}, at least one line. */
import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';

/** Most records one task's calibration data may hold (the worker tokenizes every one of them). */
export const MAX_CALIBRATION_LINES = 100_000;

function tooManyRecords(param: string): InlaidError {
  return new InlaidError(status.INVALID_ARGUMENT, `\`${param}\` has more than ${MAX_CALIBRATION_LINES} records; the limit is ${MAX_CALIBRATION_LINES}`, {
    param,
    code: 'request_too_large',
    httpStatus: 413,
  });
}

/** Returns the number of records; a 400 naming `param` and the line otherwise (413 over the record cap). */
export function checkCalibration(jsonl: string, param = 'calibration'): number {
  let records = 0;
  const lines = jsonl.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]?.trim() ?? '';
    if (line === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      throw InlaidError.invalid(`\`${param}\` line ${i + 1} is not JSON`, param);
    }
    const ok =
      typeof rec === 'object' && rec !== null && (typeof (rec as { text?: unknown }).text === 'string' || Array.isArray((rec as { messages?: unknown }).messages));
    if (!ok) throw InlaidError.invalid(`\`${param}\` line ${i + 1}: expected {"text": string} or {"messages": [...]}`, param);
    if (++records > MAX_CALIBRATION_LINES) throw tooManyRecords(param);
  }
  if (records === 0) throw InlaidError.invalid(`\`${param}\` is empty: at least one JSONL record is required`, param);
  return records;
}
