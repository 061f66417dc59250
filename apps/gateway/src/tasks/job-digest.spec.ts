/** The digest a job records, and which adapter a load step replaces on a worker that already holds the name (pure: job-digest.ts). */
import { heldOther, jobDigest, servedDigest } from './job-digest';

const D1 = 'a'.repeat(64);
const D2 = 'b'.repeat(64);
const D3 = 'c'.repeat(64);
const fresh = (digest?: string) => ({ fresh: true, digest });
const existing = (digest?: string) => ({ fresh: false, digest });

describe('jobDigest', () => {
  it("records the digest every worker that loaded reports, ignoring workers that already held the name (an older adapter's)", () => {
    expect(jobDigest([fresh(D1), fresh(D1)])).toBe(D1);
    expect(jobDigest([fresh(D1), existing(D2)])).toBe(D1); // the ALREADY_EXISTS worker's stale adapter: heldOther, reloaded
    expect(jobDigest([fresh(D1), fresh(undefined)])).toBe(D1); // an older worker reports none
  });

  it('takes what the workers hold when none loaded (a resumed step), and records nothing when unknown or not agreed', () => {
    expect(jobDigest([existing(D1), existing(D1)])).toBe(D1);
    expect(jobDigest([fresh(D1), fresh(D2)])).toBeNull(); // the files changed during the step: path-only
    expect(jobDigest([existing(D1), existing(D2)])).toBeNull();
    expect(jobDigest([fresh(undefined), existing(D1)])).toBeNull(); // only fresh loads count when there are any
    expect(jobDigest([])).toBeNull();
  });

  it("falls back on the validated digest where the fresh loads give none, and prefers it to what workers already held", () => {
    expect(jobDigest([existing(D1)], D2)).toBe(D2); // before: D1, a worker alone holding the old bytes of a rewritten path
    expect(jobDigest([existing(D1), existing(D1)], D2)).toBe(D2);
    expect(jobDigest([fresh(D1), fresh(D3)], D2)).toBe(D2); // fresh loads that disagree
    expect(jobDigest([fresh(undefined)], D2)).toBe(D2); // older workers loaded
    expect(jobDigest([], D2)).toBe(D2);
    // the fresh loads' agreed digest is what the workers serve now (the files changed after the validation): recorded
    expect(jobDigest([fresh(D3), existing(D1)], D2)).toBe(D3);
  });
});

describe('servedDigest', () => {
  it('records what every worker serves after the replaces when they agree, else the reference', () => {
    // the only worker held D1, the reference was the validated D2, and its replace read D3 (the files changed since)
    expect(servedDigest([fresh(D3)], D2)).toBe(D3); // before: D2, which no worker served
    expect(servedDigest([fresh(D2), existing(D2)], D2)).toBe(D2);
    expect(servedDigest([fresh(D2), fresh(D3)], D2)).toBe(D2); // they disagree: the reference (a catch-up settles the rest)
    expect(servedDigest([fresh(D3), existing(D2)], D2)).toBe(D2);
    expect(servedDigest([fresh(undefined), fresh(D3)], D2)).toBe(D3); // an older worker reports none
    expect(servedDigest([fresh(undefined)], null)).toBeNull();
  });
});

describe('heldOther', () => {
  const held = (path: string | undefined, digest?: string) => ({ path, digest });

  it("tells an older job's adapter (another path, or the same path with another digest) from the job's", () => {
    expect(heldOther(held('/a/t', D1), '/a/t', D2)).toBe(true); // rewritten in place: before, counted as loaded
    expect(heldOther(held('/a/old', D2), '/a/t', D2)).toBe(true); // another path, the same bytes
    expect(heldOther(held('/a/old'), '/a/t', null)).toBe(true);
    expect(heldOther(held('/a/t', D2), '/a/t', D2)).toBe(false);
  });

  it("compares paths only where a digest is unknown, and leaves a worker's own adapter (no LoadAdapter path) alone", () => {
    expect(heldOther(held('/a/t', undefined), '/a/t', D2)).toBe(false); // an older worker
    expect(heldOther(held('/a/t', D1), '/a/t', null)).toBe(false); // no reference
    expect(heldOther(held(undefined, D1), '/a/t', D2)).toBe(false); // its --adapters-dir
  });
});
