"""Each metric on inputs whose score is known by hand, and the pass@1 sandbox."""

import pytest
from inlaid_worker.tasks import metrics as m
from inlaid_worker.tasks.sandbox import run_python


def test_rouge1_and_rougeL_hand_computed() -> None:
    # pred 4 tokens, ref 5 tokens, unigram overlap 3 -> P=3/4, R=3/5, F=2PR/(P+R)=2/3
    assert m.rouge1_f("the cat sat down", "The cat is sitting down") == pytest.approx(2 / 3)
    # LCS("a b c d", "a c b d") = 3 -> F = 3/4
    assert m.rougeL_f("a b c d", "a c b d") == pytest.approx(0.75)
    assert m.rouge1_f("", "anything") == 0.0
    assert m.rouge_tokens("It's 9:30, OK?") == ["it", "s", "9", "30", "ok"]


def test_bleu_perfect_and_disjoint() -> None:
    refs = ["el gato está en la alfombra roja", "hoy es un buen día para caminar"]
    assert m.bleu(refs, refs) == pytest.approx(100.0)
    assert m.bleu(["zzz qqq www", "xxx yyy vvv"], refs) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        m.bleu(["a"], ["a", "b"])


def test_exact_match_and_contains_normalise() -> None:
    assert m.exact_match("The Philadelphia Eagles.", ["Philadelphia Eagles"])
    assert not m.exact_match("the Eagles of Philadelphia", ["Philadelphia Eagles"])
    assert m.contains("I think it was the Philadelphia Eagles!", ["philadelphia eagles"])
    assert not m.contains("no idea", ["Philadelphia Eagles"])


def test_math_uses_last_number() -> None:
    assert m.number_match("7 + 2 = 9. The answer is 9.", "9")
    assert m.number_match("It costs 1,250 dollars", "1250")
    assert not m.number_match("7 + 2 = 9. The answer is 8.", "9")
    assert not m.number_match("no number", "9")


def test_yes_no_and_option_choice() -> None:
    assert m.yes_no("Yes, it is.") == "yes" and m.yes_no("False.") == "no" and m.yes_no("maybe") is None
    opts = {"A": "bank", "B": "library", "C": "department store", "D": "mall", "E": "new york"}
    assert m.choose_option("department store", opts) == "C"
    assert m.choose_option("B. library", opts) == "B"
    assert m.choose_option("You would find it at the mall.", opts) == "D"
    assert m.choose_option("The answer is E", opts) == "E"
    assert m.choose_option("nowhere", opts) is None


def test_score_task_headline_keys() -> None:
    out = m.score_task("classification", ["yes", "no", "yes"], [["yes"], ["yes"], ["yes"]], [{}, {}, {}])
    assert out == {"accuracy": pytest.approx(200 / 3)}
    with pytest.raises(ValueError):
        m.score_task("nonsense", ["a"], [["a"]], [{}])


META = {
    "code_prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n',
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
    "entry_point": "add",
}


def test_pass_at_1_correct_incorrect_and_whole_function() -> None:
    body_ok = "    return a + b"
    body_bad = "    return a - b"
    whole_fn = "```python\ndef add(a, b):\n    return b + a\n```\nThis adds."
    assert m.pass_at_1([body_ok, body_bad, whole_fn, "return a + b"], [META] * 4) == pytest.approx(75.0)


def test_sandbox_time_limit_and_no_network() -> None:
    slow = m.build_program(META["code_prompt"], "    while True:\n        pass", META["test"], "add")
    res = run_python(slow, timeout_s=1.0)
    assert not res.passed and res.reason == "timeout"
    net = "import socket\ns = socket.create_connection(('127.0.0.1', 5432))\n"
    res = run_python(net, timeout_s=5.0)
    assert not res.passed and "network access is disabled" in res.stderr
