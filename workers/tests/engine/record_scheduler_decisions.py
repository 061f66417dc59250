"""Writes scheduler_decisions.json: every step of the randomized workloads of scheduler_scenarios.py as decided
by the engine scheduler as it was before session 7 (workers/inlaid_worker/engine/scheduler.py at ba48575^ =
2511a92~23 = 6ff3fe0: a deque waiting queue scanned front to back, can_allocate / allocate for every running
sequence). test_scheduler_equivalence.py holds today's Scheduler to that recording.

    cd workers && ../.venv/bin/python tests/engine/record_scheduler_decisions.py             # from ba48575^ (git)
    cd workers && ../.venv/bin/python tests/engine/record_scheduler_decisions.py --live      # from today's Scheduler

The old scheduler.py is read with `git show` and run against today's block manager and sequence (neither changed
in a way it sees). `--live` re-records from today's Scheduler: only for a change of decisions that was meant
and reviewed (say so in the commit)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

from scheduler_scenarios import SEEDS, STEPS, Coverage, run

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "scheduler_decisions.json"
OLD_REV = "ba48575^"
SCHEDULER_PATH = "workers/inlaid_worker/engine/scheduler.py"


def old_scheduler(rev: str) -> tuple[type, str]:
    """The Scheduler class of scheduler.py at `rev`, and the commit's full hash."""
    sha = subprocess.run(["git", "rev-parse", rev], cwd=HERE, check=True, capture_output=True, text=True).stdout
    source = subprocess.run(["git", "show", f"{rev}:{SCHEDULER_PATH}"], cwd=HERE, check=True,
                            capture_output=True, text=True).stdout  # fmt: skip
    module = types.ModuleType("scheduler_at_rev")
    sys.modules[module.__name__] = module  # dataclasses looks its module up
    exec(compile(source, f"{rev}:{SCHEDULER_PATH}", "exec"), module.__dict__)  # noqa: S102 - our own history
    return module.Scheduler, sha.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default=OLD_REV, help=f"record from scheduler.py at this commit (default {OLD_REV})")
    ap.add_argument("--live", action="store_true", help="record from today's Scheduler instead")
    ap.add_argument("--out", type=Path, default=FIXTURE)
    args = ap.parse_args()
    if args.live:
        from inlaid_worker.engine.scheduler import Scheduler

        make, source = Scheduler, f"{SCHEDULER_PATH} in the working tree (--live)"
    else:
        make, sha = old_scheduler(args.rev)
        source = f"{SCHEDULER_PATH} at {sha} ({args.rev}), the scheduler before session 7"
    seeds = {}
    for seed in SEEDS:
        cov = Coverage()
        steps = list(run(seed, make, cov))
        seeds[str(seed)] = {"covers": dataclasses.asdict(cov), "steps": steps}
        print(f"seed {seed}: {cov}")
    doc = {
        "recorded_from": source,
        "regenerate": "cd workers && ../.venv/bin/python tests/engine/record_scheduler_decisions.py",
        "format": "per seed, STEPS steps as 'chunks|preempted|state': see scheduler_scenarios.py",
        "steps_per_seed": STEPS,
        "seeds": seeds,
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
