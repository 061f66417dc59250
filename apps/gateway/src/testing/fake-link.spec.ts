import { runRequestId } from '../scheduling/resume';
import { requestOf } from './fake-link';

it("requestOf gives a run's request id, and an id without a run suffix whole (before: its last character cut)", () => {
  expect(requestOf(runRequestId('req-1', 3))).toBe('req-1');
  expect(requestOf(runRequestId('a~b', 1))).toBe('a~b');
  expect(requestOf('plain-id')).toBe('plain-id');
});
