/**
 * Structured logs: a Nest LoggerService that writes one JSON object per line (ts, level, context, msg, and
 * any fields of an object message). `formatLogLine` is pure; the logger is its thin shell over a stream.
 */
import type { LoggerService, LogLevel } from '@nestjs/common';

export interface LogLine {
  readonly level: LogLevel;
  readonly context?: string;
  readonly message: unknown;
  readonly extra?: readonly unknown[];
  readonly now: Date;
}

const LEVEL_NAMES: Record<LogLevel, string> = { log: 'info', error: 'error', warn: 'warn', debug: 'debug', verbose: 'trace', fatal: 'fatal' };

function fieldsOf(message: unknown): Record<string, unknown> {
  if (message instanceof Error) return { msg: message.message, stack: message.stack };
  if (typeof message === 'object' && message !== null && !Array.isArray(message)) {
    const { msg, message: m, ...rest } = message as Record<string, unknown>;
    return { msg: msg ?? m ?? '', ...rest };
  }
  return { msg: typeof message === 'string' ? message : JSON.stringify(message) };
}

export function formatLogLine(line: LogLine): string {
  const out: Record<string, unknown> = { ts: line.now.toISOString(), level: LEVEL_NAMES[line.level] };
  if (line.context !== undefined) out['context'] = line.context;
  Object.assign(out, fieldsOf(line.message));
  const extra = (line.extra ?? []).filter((e) => e !== undefined && e !== null && e !== '');
  if (extra.length > 0) {
    if (line.level === 'error' && typeof extra[0] === 'string' && extra.length === 1) out['stack'] = extra[0];
    else out['extra'] = extra;
  }
  try {
    return JSON.stringify(out);
  } catch {
    return JSON.stringify({ ts: out['ts'], level: out['level'], context: line.context, msg: String(out['msg']) });
  }
}

export class JsonLogger implements LoggerService {
  private levels: Set<LogLevel>;

  constructor(levels: readonly LogLevel[] = ['log', 'warn', 'error', 'fatal'], private readonly out: NodeJS.WritableStream = process.stdout) {
    this.levels = new Set(levels);
  }

  setLogLevels(levels: LogLevel[]): void {
    this.levels = new Set(levels);
  }

  log(message: unknown, ...rest: unknown[]): void {
    this.write('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.write('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.write('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.write('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.write('verbose', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.write('fatal', message, rest);
  }

  private write(level: LogLevel, message: unknown, rest: unknown[]): void {
    if (!this.levels.has(level)) return;
    const args = [...rest];
    const context = args.length > 0 && typeof args[args.length - 1] === 'string' ? (args.pop() as string) : undefined;
    this.out.write(formatLogLine({ level, context, message, extra: args, now: new Date() }) + '\n');
  }
}
