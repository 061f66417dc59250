/** Tiny `--flag value` parser shared by the CLIs (no dependency). */

export type Flags = ReadonlyMap<string, string>;

export function parseFlags(argv: readonly string[], booleans: readonly string[] = []): Flags {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument "${a}"`);
    const [name, inline] = a.slice(2).split('=', 2);
    if (inline !== undefined) out.set(name, inline);
    else if (booleans.includes(name)) out.set(name, 'true');
    else {
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new Error(`--${name} needs a value`);
      out.set(name, v);
      i++;
    }
  }
  return out;
}

export function numberFlag(flags: Flags, name: string, fallback?: number): number {
  const v = flags.get(name);
  if (v === undefined) {
    if (fallback === undefined) throw new Error(`--${name} is required`);
    return fallback;
  }
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number, got "${v}"`);
  return n;
}

export function rejectUnknown(flags: Flags, known: readonly string[]): void {
  for (const k of flags.keys()) if (!known.includes(k)) throw new Error(`unknown flag --${k}; known: ${known.join(', ')}`);
}
