/** HTTP helpers of the task API e2e tests: JSON and multipart calls, and a listing of what is on disk. */
import { existsSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

export interface HttpResult {
  status: number;
  json: any;
  text: string;
}

async function result(res: Response): Promise<HttpResult> {
  const text = await res.text();
  let json: any = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* plain text */
  }
  return { status: res.status, json, text };
}

export async function jsonCall(base: string, method: string, path: string, body?: unknown): Promise<HttpResult> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return result(res);
}

/** A multipart POST: string values are fields, Buffers are files (named `<field>.bin` unless `names` says). */
export async function multipartCall(base: string, path: string, parts: Record<string, string | Buffer>, names: Record<string, string> = {}): Promise<HttpResult> {
  const form = new FormData();
  for (const [key, value] of Object.entries(parts)) {
    if (typeof value === 'string') form.append(key, value);
    else form.append(key, new Blob([new Uint8Array(value)]), names[key] ?? `${key}.bin`);
  }
  return result(await fetch(`${base}${path}`, { method: 'POST', body: form }));
}

/** Every file and directory under `dir` (relative paths, sorted); [] when it does not exist. */
export function listTree(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      out.push(relative(dir, p) + (e.isDirectory() ? '/' : ''));
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}
