/** Calibration data check (pure): JSONL, each line {"text": str} or {"messages": [...]}, at least one line. */
import { status } from '@grpc/grpc-js';
import { InlaidError } from '../common/inlaid-error';

/** Most records one task's calibration data may hold (the worker tokenizes every one of them). */
export const MAX_CALIBRATION_LINES = 100_000;
/** Most lines, blank ones included (room for a blank line after every record), so blank padding is bounded too. */
export const MAX_CALIBRATION_TOTAL_LINES = 2 * MAX_CALIBRATION_LINES;

/** 413 naming `param`: more than `limit` `what` (records, or lines with blank ones). */
function tooMany(param: string, what: string, limit: number): InlaidError {
  return new InlaidError(status.INVALID_ARGUMENT, `\`${param}\` has more than ${limit} ${what}; the limit is ${limit}`, {
    param,
    code: 'request_too_large',
    httpStatus: 413,
  });
}

/** Returns the number of records; a 400 naming `param` and the line otherwise (413 over the record or line cap). */
export function checkCalibration(jsonl: string, param = 'calibration'): number {
  let records = 0;
  // Line by line with indexOf: split('\n') on a large upload of blank lines builds an array V8 cannot hold.
  for (let i = 0, start = 0; start <= jsonl.length; i++) {
    const nl = jsonl.indexOf('\n', start);
    const end = nl === -1 ? jsonl.length : nl;
    if (i >= MAX_CALIBRATION_TOTAL_LINES && (nl !== -1 || end > start)) throw tooMany(param, 'lines', MAX_CALIBRATION_TOTAL_LINES); // not the empty tail after a final \n
    const line = jsonl.slice(start, end).trim();
    start = end + 1;
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
    if (++records > MAX_CALIBRATION_LINES) throw tooMany(param, 'records', MAX_CALIBRATION_LINES);
  }
  if (records === 0) throw InlaidError.invalid(`\`${param}\` is empty: at least one JSONL record is required`, param);
  return records;
}
