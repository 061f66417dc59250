"""Task metrics (pure except pass@1, which runs code through `sandbox`). Scores are in [0, 100].

- rouge1 / rougeL: F-measure over lower-cased alphanumeric tokens (as rouge-score tokenizes, no stemming).
- bleu: SacreBLEU corpus BLEU (13a tokenization).
- exact_match (SQuAD normalisation, best over references) and contains for QA; the last number for math.
- accuracy: the first yes/no (BoolQ), or the option a free-text answer picks (multiple choice).
- pass@1: greedy completion passes the HumanEval tests in the sandbox.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .sandbox import run_python


def _check_lengths(preds: Sequence[Any], refs: Sequence[Any]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    if not preds:
        raise ValueError("no predictions to score")


def _mean(xs: Sequence[float]) -> float:
    return 100.0 * sum(xs) / len(xs)


# --- ROUGE ---------------------------------------------------------------------------------------------
def rouge_tokens(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_pred, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge1_f(pred: str, ref: str) -> float:
    a, b = rouge_tokens(pred), rouge_tokens(ref)
    overlap = sum((Counter(a) & Counter(b)).values())
    return _f1(overlap, len(a), len(b))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rougeL_f(pred: str, ref: str) -> float:
    a, b = rouge_tokens(pred), rouge_tokens(ref)
    return _f1(lcs_length(a, b), len(a), len(b))


# --- BLEU ----------------------------------------------------------------------------------------------
def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    import sacrebleu

    _check_lengths(preds, refs)
    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)]).score)


# --- QA, math, classification -------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(pred: str, refs: Sequence[str]) -> bool:
    p = normalize_answer(pred)
    return any(p == normalize_answer(r) for r in refs)


def contains(pred: str, refs: Sequence[str]) -> bool:
    p = normalize_answer(pred)
    return any(normalize_answer(r) and normalize_answer(r) in p for r in refs)


_NUM = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> float | None:
    found = _NUM.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").rstrip("."))
    except ValueError:
        return None


def number_match(pred: str, ref: str) -> bool:
    got = last_number(pred)
    return got is not None and abs(got - float(ref)) < 1e-6


def yes_no(text: str) -> str | None:
    m = re.search(r"\b(yes|no|true|false)\b", text.lower())
    if not m:
        return None
    return {"true": "yes", "false": "no"}.get(m.group(1), m.group(1))


def option_letter(text: str) -> str | None:
    for pattern in (r"answer is:?\s*\(?([A-E])\b", r"^\s*\(?([A-E])\b", r"\b([A-E])[.)]", r"\b([B-E])\b"):
        m = re.search(pattern, text, flags=re.IGNORECASE if pattern.startswith("answer") else 0)
        if m:
            return m.group(1).upper()
    return None


def choose_option(pred: str, options: dict[str, str]) -> str | None:
    """The option a free-text answer picks: its exact text, else a leading letter ("B. ..."), else the
    longest option text it contains, else any option letter it names."""
    p = normalize_answer(pred)
    for letter, text in options.items():
        if p == normalize_answer(text):
            return letter
    m = re.match(r"^\s*\(?([A-E])\b(?:[.):]|\s*$)", pred)
    if m and m.group(1) in options:
        return m.group(1)
    by_length = sorted(options.items(), key=lambda kv: -len(normalize_answer(kv[1])))
    for letter, text in by_length:
        t = normalize_answer(text)
        if t and re.search(rf"\b{re.escape(t)}\b", p):
            return letter
    return option_letter(pred)


# --- code ----------------------------------------------------------------------------------------------
def extract_code(completion: str) -> str:
    """The code inside the first fenced block if there is one, else the text as it is."""
    m = re.search(r"```(?:python|py)?\n(.*?)(?:```|$)", completion, flags=re.DOTALL)
    return m.group(1) if m else completion


def build_program(code_prompt: str, completion: str, test: str, entry_point: str) -> str:
    """A whole function (the model rewrote the signature) replaces the prompt's; a body completes it."""
    code = extract_code(completion)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, flags=re.MULTILINE):
        # keep the prompt's imports and helpers; the model's definition overrides the stub
        body = code_prompt + "    pass\n\n" + code
    else:
        lines = code.splitlines()
        if lines and not lines[0].startswith((" ", "\t")):
            code = "\n".join("    " + ln for ln in lines)  # a body the model forgot to indent
        body = code_prompt + code
    return f"{body}\n\n{test}\n\ncheck({entry_point})\n"


def pass_at_1(completions: Sequence[str], metas: Sequence[dict[str, Any]], timeout_s: float = 5.0) -> float:
    _check_lengths(completions, metas)
    programs = [
        build_program(m["code_prompt"], c, m["test"], m["entry_point"]) for c, m in zip(completions, metas)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: run_python(p, timeout_s).passed, programs))
    return _mean([float(r) for r in results])


# --- per task ------------------------------------------------------------------------------------------
def score_task(
    kind: str, preds: Sequence[str], refs: Sequence[Sequence[str]], metas: Sequence[dict[str, Any]]
) -> dict[str, float]:
    """All metrics of a task kind; `spec.TaskSpec.metric` names the headline one."""
    _check_lengths(preds, refs)
    if kind == "summarization":
        return {
            "rouge1": _mean([rouge1_f(p, r[0]) for p, r in zip(preds, refs)]),
            "rougeL": _mean([rougeL_f(p, r[0]) for p, r in zip(preds, refs)]),
        }
    if kind == "translation":
        return {"bleu": bleu(preds, [r[0] for r in refs])}
    if kind == "qa":
        return {
            "exact_match": _mean([float(exact_match(p, r)) for p, r in zip(preds, refs)]),
            "contains": _mean([float(contains(p, r)) for p, r in zip(preds, refs)]),
        }
    if kind == "math":
        return {"exact_match": _mean([float(number_match(p, r[0])) for p, r in zip(preds, refs)])}
    if kind == "classification":
        return {"accuracy": _mean([float(yes_no(p) == r[0]) for p, r in zip(preds, refs)])}
    if kind == "multiple_choice":
        picks = [choose_option(p, m.get("options", {})) for p, m in zip(preds, metas)]
        return {"accuracy": _mean([float(c == r[0]) for c, r in zip(picks, refs)])}
    if kind == "code":
        return {"pass@1": pass_at_1(preds, metas)}
    raise ValueError(f"unknown task kind {kind!r}")
