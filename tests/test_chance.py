"""Chance baselines (majority answer, last number in the question) and collapse detection, table-driven,
with real GSM8K problems among the cases."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction

import pytest

from trainables.data.programs import solution_to_program
from trainables.data.prompts import format_example
from trainables.data.records import parse_gsm8k_answer
from trainables.scoring.baselines import (
    LAST_NUMBER,
    MAJORITY,
    baselines_of_generations,
    chance_baselines,
    last_number,
    majority_answer,
    question_of,
)
from trainables.scoring.collapse import answer_spread, describe_collapse, is_collapsed, min_distinct

# (question, reference): GSM8K test problems 0, 1, 3 (last number not the answer), 4 and 221 (it is).
JANET = (
    "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
    "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh "
    "duck egg. How much in dollars does she make every day at the farmers' market?",
    "18",
)
ROBE = (
    "A robe takes 2 bolts of blue fiber and half that much white fiber.  How many bolts in total does it take?",
    "3",
)
SPRINTS = (
    "James decides to run 3 sprints 3 times a week.  He runs 60 meters each sprint.  How many total meters "
    "does he run a week?",
    "540",
)
WENDI = (
    "Every day, Wendi feeds each of her chickens three cups of mixed chicken feed, containing seeds, mealworms "
    "and vegetables to help keep them healthy.  She gives the chickens their feed in three separate meals. In "
    "the morning, she gives her flock of chickens 15 cups of feed.  In the afternoon, she gives her chickens "
    "another 25 cups of feed.  How many cups of feed does she need to give her chickens in the final meal of "
    "the day if the size of Wendi's flock is 20 chickens?",
    "20",
)
TANK = (
    "A water tank is filled with 120 liters of water. Celine used 90 liters of water from the tank to water her "
    "small garden. She was then able to collect rainwater that is twice as much as what was left. How many "
    "liters of water are in the tank now?",
    "90",
)


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (JANET[0], Fraction(2)),  # `$2`
        (ROBE[0], Fraction(2)),
        (SPRINTS[0], Fraction(60)),
        (WENDI[0], Fraction(20)),
        (TANK[0], Fraction(90)),
        ("Jan has three times the number of pets as Marcia. How many pets?", None),  # numbers in words
        ("It costs $1,250.50 on 12/25/2020.", Fraction(2501, 2)),  # the date is no number
        ("The temperature fell to -4 degrees, then rose by .5", Fraction(1, 2)),
    ],
)
def test_last_number_of_a_question(question, expected):
    assert last_number(question) == expected


def test_the_question_is_read_out_of_every_prompt_style():
    solution = (  # GSM8K test problem 221's own solution
        "After watering Celine's garden, 120 - 90 = <<120-90=30>>30 liters of water were left in the tank.\n"
        "Celine was able to collect 30 x 2 = <<30*2=60>>60 liters of rainwater.\n"
        "Thus, there are 30 + 60 = <<30+60=90>>90 liters of water in the tank.\n#### 90"
    )
    record = parse_gsm8k_answer(TANK[0], solution)
    record = dataclasses.replace(record, program=solution_to_program(record.steps, record.answer))
    for style in ("answer_only", "breakdown", "no_breakdown", "code"):
        prompt, _ = format_example(record, style)
        assert question_of(prompt) == " ".join(TANK[0].split()), style
        assert last_number(question_of(prompt)) == 90
    assert question_of("no marker 7") == "no marker 7"


@pytest.mark.parametrize(
    ("references", "expected"),
    [
        ([Fraction(5)], 5),
        ([Fraction(3), Fraction(5), Fraction(5)], 5),
        ([Fraction(9), Fraction(2), Fraction(9), Fraction(2)], 2),  # a tie goes to the smaller answer
        ([Fraction(1, 2), Fraction(1, 2), Fraction(7)], Fraction(1, 2)),
    ],
)
def test_majority_answer(references, expected):
    assert majority_answer(references) == expected
    assert majority_answer(list(reversed(references))) == expected


def test_chance_baselines_on_real_problems():
    problems = [JANET, ROBE, SPRINTS, WENDI, TANK, ("Tom has 4 and 16 more. How many?", "20")]
    baselines = chance_baselines([q for q, _ in problems], [r for _, r in problems])
    majority, last = baselines[MAJORITY], baselines[LAST_NUMBER]
    assert (majority.answer, majority.accuracy, majority.n) == ("20", pytest.approx(2 / 6), 6)
    assert last.accuracy == pytest.approx(2 / 6)  # Wendi and the tank
    assert 0 <= majority.low <= majority.accuracy <= majority.high <= 1
    with pytest.raises(ValueError, match="not a number"):
        chance_baselines(["q 1"], ["seven"])
    with pytest.raises(ValueError, match="2 questions but 1 references"):
        chance_baselines(["a", "b"], ["1"])
    with pytest.raises(ValueError, match="at least one"):
        chance_baselines([], [])


def test_baselines_of_a_generations_file_use_its_inputs_and_references():
    rows = [
        {"input": f"Answer the math question. Question: {q}", "reference": r, "prediction": "x"}
        for q, r in (JANET, WENDI, TANK, TANK)
    ]
    baselines = baselines_of_generations(rows)
    assert baselines[MAJORITY].answer == "90" and baselines[MAJORITY].accuracy == 0.5
    assert baselines[LAST_NUMBER].accuracy == 0.75
    with pytest.raises(ValueError, match="row 1 has no 'input' or 'reference'"):
        baselines_of_generations([rows[0], {"prediction": "1"}])


def test_real_gsm8k_test_split_baselines(data_dir):
    path = data_dir / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    records = [parse_gsm8k_answer(r["question"], r["answer"]) for r in rows]
    baselines = chance_baselines([r.question for r in records], [r.answer for r in records])
    assert baselines[MAJORITY].answer == "5" and baselines[MAJORITY].accuracy == pytest.approx(40 / 1319)
    assert baselines[LAST_NUMBER].accuracy == pytest.approx(28 / 1319)


@pytest.mark.parametrize(
    ("answers", "distinct", "share", "collapsed"),
    [
        ([Fraction(12)] * 60 + [Fraction(i) for i in range(36)], 36, 61 / 96, True),  # one answer on most
        ([Fraction(i % 5) for i in range(96)], 5, 20 / 96, True),  # five answers for 96 problems
        ([Fraction(i % 40) for i in range(96)], 40, 3 / 96, False),
        ([None] * 90 + [Fraction(i) for i in range(6)], 6, 1 / 96, True),  # no answer is not an answer
        ([Fraction(i) for i in range(7)] + [Fraction(0)], 7, 2 / 8, False),  # 8 examples: 2 distinct suffice
        (["5"] * 4 + ["6"] * 4, 2, 0.5, False),  # exactly half is not more than half
    ],
)
def test_answer_spread_and_collapse(answers, distinct, share, collapsed):
    spread = answer_spread(answers)
    assert spread == {"distinct_answers": distinct, "top_answer_share": pytest.approx(share)}
    assert is_collapsed(**spread, n=len(answers)) is collapsed


def test_collapse_thresholds_and_words():
    assert [min_distinct(n) for n in (1, 8, 39, 40, 96, 1319)] == [1, 2, 10, 10, 10, 10]
    assert answer_spread([None, None]) == {"distinct_answers": 0, "top_answer_share": 0.0}
    assert describe_collapse(distinct_answers=5, top_answer_share=0.625) == "5 distinct answers, 62% on one"
    assert describe_collapse(distinct_answers=1, top_answer_share=1.0) == "1 distinct answer, 100% on one"
    assert describe_collapse(distinct_answers=0, top_answer_share=0.0) == "no answer in any generation"
    with pytest.raises(ValueError, match="at least one"):
        answer_spread([])
