"""Rewards: the grader decides accuracy; the registry picks functions by name."""
from __future__ import annotations

import threading

import pytest

from ftllm.train.rewards import REWARDS, accuracy, completion_text, select_rewards, single_box


def test_accuracy_right_wrong_and_unparseable():
    completions = [
        "2 と 2 を足すと \\boxed{4} です。",
        "答えは \\boxed{5}",
        "わかりません",
        "",
    ]
    assert accuracy(completions, answer=["4"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_accuracy_accepts_equivalent_forms_and_chat_messages():
    chat = [[{"role": "assistant", "content": "よって \\boxed{\\frac{1}{2}}"}]]
    assert accuracy(chat, answer=["0.5"]) == [1.0]
    assert accuracy(["x = \\boxed{\\frac{2}{4}}"], answer=["\\frac{1}{2}"]) == [1.0]


def test_accuracy_runs_outside_the_main_thread():
    # math-verify's signal-based timeout only works in the main thread; the reward must not raise elsewhere
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=accuracy(["\\boxed{7}", "\\boxed{8}"], answer=["7", "7"])))
    worker.start()
    worker.join()
    assert result["r"] == [1.0, 0.0]


def test_single_box_wants_exactly_one_box():
    assert single_box(["\\boxed{1}", "\\boxed{1} or \\boxed{2}", "1", "\\boxed {3}"]) == [1.0, 0.0, 0.0, 1.0]


def test_completion_text_reads_strings_and_messages():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"


def test_select_rewards_by_name_keeps_order_and_weights():
    funcs, weights = select_rewards({"single_box": 0.1, "accuracy": 1.0})
    assert funcs == [REWARDS["single_box"], REWARDS["accuracy"]]
    assert weights == [0.1, 1.0]
    with pytest.raises(ValueError, match="unknown reward"):
        select_rewards({"acuracy": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        select_rewards({})
