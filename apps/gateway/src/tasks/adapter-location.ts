/** Resolves a client-given adapter directory: it must exist and stay under an allowed root after symlinks. */
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { InlaidError } from '../common/inlaid-error';

/** Pure containment check on already-resolved paths. */
export function isUnder(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel));
}

export async function resolveAdapterPath(raw: string, roots: readonly string[], param = 'adapter.path'): Promise<string> {
  const candidates = isAbsolute(raw) ? [resolve(raw)] : roots.map((r) => resolve(r, raw));
  for (const candidate of candidates) {
    let real: string;
    try {
      real = await realpath(candidate);
    } catch {
      continue;
    }
    const realRoots = await Promise.all(roots.map((r) => realpath(r).catch(() => resolve(r))));
    if (!realRoots.some((r) => isUnder(real, r))) {
      throw InlaidError.invalid(`\`${param}\` ${JSON.stringify(raw)} is outside the allowed adapter roots`, param);
    }
    if (!(await stat(real)).isDirectory()) throw InlaidError.invalid(`\`${param}\` ${JSON.stringify(raw)} is not a directory`, param);
    return real;
  }
  if (isAbsolute(raw) && !roots.some((r) => isUnder(resolve(raw), resolve(r)))) {
    throw InlaidError.invalid(`\`${param}\` ${JSON.stringify(raw)} is outside the allowed adapter roots`, param);
  }
  throw InlaidError.invalid(`\`${param}\` ${JSON.stringify(raw)} does not exist under the adapter roots`, param);
}
