"""Builders on tiny hand-made raw records: prompts, targets, and byte-identical rebuilds."""

import json
from dataclasses import asdict, replace

import pytest
from inlaid_worker.tasks import build, builders, spec
from inlaid_worker.tasks.chat import render_answer, render_prompt


def _raw(n: int) -> dict[str, list[dict]]:
    return {
        "xsum": [{"document": f"Story {i} " + "word " * 400, "summary": f"Summary {i}."} for i in range(n)],
        "asdiv": [
            {
                "passage": f"Ann has {i} apples and gets 3 more.",
                "question": "How many?",
                "answer": f"{i + 3} apples",
            }
            for i in range(n)
        ]
        + [{"passage": "p", "question": "Who?", "answer": "Ann"}],
        "nq_open": [
            {"question": f"who wrote book {i}", "answer": [f"Author {i}", "A. N."]} for i in range(n)
        ],
        "boolq": [
            {"question": f"is {i} even", "passage": f"{i} is a number.", "answer": str(i % 2 == 0)}
            for i in range(n)
        ],
        "csqa": [
            {
                "question": f"Where is thing {i}?",
                "answer": "B. shop",
                "options": "\nA. home\nB. shop\nC. park\nD. sea\nE. moon",
            }
            for i in range(n)
        ],
        "en_es": [{"source": f"The cat {i} runs.", "target": f"El gato {i} corre."} for i in range(n)],
        "humaneval": [
            {
                "task_id": f"HumanEval/{i}",
                "prompt": f"def f{i}(x):\n",
                "canonical_solution": "    return x\n",
                "test": "def check(c):\n    assert c(1) == 1\n",
                "entry_point": f"f{i}",
            }
            for i in range(n)
        ],
    }


@pytest.mark.parametrize("task", sorted(spec.TASKS))
def test_build_task_is_deterministic(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(spec.TASKS, task, replace(spec.TASKS[task], sizes=(6, 2, 3)))
    raw = _raw(14)[task]
    first = build.build_task(task, raw, seed=0)
    again = build.build_task(task, list(reversed(raw)), seed=0)
    other = build.build_task(task, raw, seed=1)
    dump = lambda d: json.dumps({k: [asdict(e) for e in v] for k, v in d.items()}, sort_keys=True)
    assert dump(first) == dump(again)
    assert dump(first) != dump(other)
    assert [len(first[s]) for s in spec.SPLITS] == [6, 2, 3]


def test_builder_contents() -> None:
    raw = _raw(3)
    xs = builders.xsum(raw["xsum"])[0]
    assert xs.prompt.startswith("Summarize") and xs.prompt.endswith(" ...") and len(xs.prompt.split()) < 320
    math = builders.asdiv(raw["asdiv"])
    assert len(math) == 3  # the non-numeric answer is dropped
    assert math[1].refs == ["4"] and math[1].target == "1 + 3 = 4. The answer is 4."
    assert builders.boolq(raw["boolq"])[1].target == "no"
    mc = builders.csqa(raw["csqa"])[0]
    assert mc.target == "shop" and mc.refs == ["B"] and mc.meta["options"]["E"] == "moon"
    he = builders.humaneval(raw["humaneval"])[0]
    assert he.meta["entry_point"] == "f0" and he.target == "    return x"


def test_equation_for_finds_one_step_rationale() -> None:
    assert (
        builders.equation_for("Ellen has six more balls than Marin. Marin has nine balls.", 15)
        == "6 + 9 = 15"
    )
    assert builders.equation_for("12 cookies shared by 4 kids", 3) == "12 / 4 = 3"
    assert builders.equation_for("no numbers here", 3) is None


def test_prompt_is_chatml() -> None:
    p = render_prompt("What is 2+2?")
    assert p == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_answer("4") == "4<|im_end|>"
    with pytest.raises(ValueError):
        render_prompt("   ")
