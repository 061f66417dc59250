/** The digest a load step records on its job (pure: jobDigest). */
import { jobDigest } from './job-digest';

const D1 = 'a'.repeat(64);
const D2 = 'b'.repeat(64);
const fresh = (digest?: string) => ({ fresh: true, digest });
const existing = (digest?: string) => ({ fresh: false, digest });

describe('jobDigest', () => {
  it("records the digest every worker that loaded reports, ignoring workers that already held the name (an older adapter's)", () => {
    expect(jobDigest([fresh(D1), fresh(D1)])).toBe(D1);
    expect(jobDigest([fresh(D1), existing(D2)])).toBe(D1); // the ALREADY_EXISTS worker's stale adapter is the catch-up's to replace
    expect(jobDigest([fresh(D1), fresh(undefined)])).toBe(D1); // an older worker reports none
  });

  it('takes what the workers hold when none loaded (a resumed step), and records nothing when unknown or not agreed', () => {
    expect(jobDigest([existing(D1), existing(D1)])).toBe(D1);
    expect(jobDigest([fresh(D1), fresh(D2)])).toBeNull(); // the files changed during the step: path-only
    expect(jobDigest([existing(D1), existing(D2)])).toBeNull();
    expect(jobDigest([fresh(undefined), existing(D1)])).toBeNull(); // only fresh loads count when there are any
    expect(jobDigest([])).toBeNull();
  });
});
