"""Raw records of each real data set -> `Example`s with prompts, targets and references (pure).

Each builder takes the parsed records of its source file and returns every usable example; `splits.split`
then cuts them. Long documents are cut to a word budget so that prompts stay short for a 135M model.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

from .example import Example

Raw = dict[str, Any]
_NUMBER = re.compile(r"^-?\d[\d,]*(\.\d+)?$")


def _id(task: str, key: str) -> str:
    return f"{task}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _clip_words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[:n]) + (" ..." if len(words) > n else "")


def xsum(records: list[Raw]) -> list[Example]:
    out = []
    for r in records:
        doc = _clip_words(r["document"], 300)
        summary = " ".join(r["summary"].split())
        prompt = f"Summarize the following news article in one sentence.\n\nArticle: {doc}"
        out.append(Example(_id("xsum", doc), prompt, summary, [summary]))
    return out


_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
} | {
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _numbers_in(text: str) -> list[float]:
    out = []
    for tok in re.findall(r"\d[\d,]*(?:\.\d+)?|[A-Za-z]+", text):
        if tok[0].isdigit():
            out.append(float(tok.replace(",", "")))
        elif tok.lower() in _NUMBER_WORDS:
            out.append(float(_NUMBER_WORDS[tok.lower()]))
    return out


def equation_for(text: str, answer: float) -> str | None:
    """`a op b = answer` for the first pair of numbers in the text (in order) and operation that gives the
    answer, trying + - * / in that order; None when no single operation on two numbers does."""
    nums = _numbers_in(text)
    ops = (
        ("+", lambda a, b: a + b),
        ("-", lambda a, b: a - b),
        ("*", lambda a, b: a * b),
        ("/", lambda a, b: a / b if b else None),
    )
    for sym, fn in ops:
        for i, a in enumerate(nums):
            for j, b in enumerate(nums):
                v = fn(a, b) if i != j else None
                if v is not None and abs(v - answer) < 1e-9:
                    return f"{_fmt(a)} {sym} {_fmt(b)} = {_fmt(answer)}"
    return None


def asdiv(records: list[Raw]) -> list[Example]:
    """The target shows a one-step equation when one yields the answer (a silver rationale derived from the
    gold answer), then the number; the reference is the number alone."""
    out = []
    for r in records:
        head = r["answer"].split(" ")[0]
        if not _NUMBER.match(head):
            continue  # 146 answers are names, times or yes/no: not a number to match
        number = head.replace(",", "")
        text = f"{r['passage'].strip()} {r['question'].strip()}"
        eq = equation_for(text, float(number))
        target = f"{eq}. The answer is {number}." if eq else f"The answer is {number}."
        prompt = f"Solve the math word problem. Give the final answer as a number.\n\n{text}"
        out.append(Example(_id("asdiv", text), prompt, target, [number]))
    return out


def nq_open(records: list[Raw]) -> list[Example]:
    out = []
    for r in records:
        q = r["question"].strip()
        refs = [a for a in r["answer"] if a.strip()]
        if not refs:
            continue
        prompt = f"Answer the question with a short phrase.\n\nQuestion: {q}?"
        out.append(Example(_id("nq_open", q), prompt, refs[0], refs))
    return out


def boolq(records: list[Raw]) -> list[Example]:
    out = []
    for r in records:
        label = {"true": "yes", "false": "no"}.get(str(r["answer"]).strip().lower())
        if label is None:
            continue
        passage = _clip_words(r["passage"], 200)
        q = r["question"].strip()
        prompt = f"Read the passage and answer the question with yes or no.\n\nPassage: {passage}\n\nQuestion: {q}?"
        out.append(Example(_id("boolq", q + passage), prompt, label, [label]))
    return out


def parse_options(options: str) -> dict[str, str]:
    """'\\nA. bank\\nB. library...' -> {'A': 'bank', 'B': 'library', ...}."""
    found = re.findall(r"^([A-E])\.\s*(.+?)\s*$", options, flags=re.MULTILINE)
    return {letter: text for letter, text in found}


def csqa(records: list[Raw]) -> list[Example]:
    """The target is the correct option's text ("A. bank" -> "bank"): a small model picks words it can relate
    to the question far better than bare letters. refs = [letter]; meta keeps the options for scoring."""
    out = []
    for r in records:
        letter = r["answer"].strip()[:1]
        options = parse_options(r["options"])
        if letter not in options or len(options) < 2:
            continue
        q = " ".join(r["question"].split())
        prompt = (
            "Answer the multiple-choice question with the correct option.\n\n"
            f"Question: {q}\nOptions:{r['options'].rstrip()}"
        )
        out.append(Example(_id("csqa", q), prompt, options[letter], [letter], {"options": options}))
    return out


def en_es(records: list[Raw]) -> list[Example]:
    """Records carry `source` (real English) and `target` (Apertium's silver Spanish)."""
    out = []
    for r in records:
        src, tgt = r["source"].strip(), " ".join(r["target"].split())
        if not src or not tgt:
            continue
        prompt = f"Translate the following English sentence into Spanish.\n\nEnglish: {src}"
        out.append(Example(_id("en_es", src), prompt, tgt, [tgt]))
    return out


def humaneval(records: list[Raw]) -> list[Example]:
    out = []
    for r in records:
        prompt = (
            "Complete the following Python function. Reply with the code of the function body only.\n\n"
            f"```python\n{r['prompt']}```"
        )
        meta = {"code_prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]}
        out.append(
            Example(_id("humaneval", r["task_id"]), prompt, r["canonical_solution"].rstrip(), [], meta)
        )
    return out


BUILDERS: dict[str, Callable[[list[Raw]], list[Example]]] = {
    "xsum": xsum,
    "asdiv": asdiv,
    "nq_open": nq_open,
    "boolq": boolq,
    "csqa": csqa,
    "en_es": en_es,
    "humaneval": humaneval,
}
