"""The tiny base's pretraining tasks teach skills, never the question -> solution mapping the study compares."""

import random

import pytest

from study.config import SearchSettings, StudyConfig
from study.prepare import pretraining_corpus
from trainables.data.generator import generate_problems
from trainables.data.pretraining import arithmetic, numbers, pretraining_pairs
from trainables.data.prompts import PROMPT_STYLES, format_example, solution_program_task, usable


def test_numbers_lists_the_questions_numbers_in_order():
    (record,) = generate_problems(1, seed=5, min_steps=2, max_steps=2)
    source, target = numbers(record)
    assert source.endswith(record.question)
    words = record.question.replace("$", " ").replace(".", " ").replace("?", " ").split()
    assert target.split() == [w for w in words if w.isdigit()]


def test_solution_program_task_reads_the_solution_not_the_question():
    (record,) = generate_problems(1, seed=3, min_steps=2, max_steps=2)
    source, target = solution_program_task(record)
    assert target == record.program
    assert record.question not in source and "####" not in source and "<<" not in source


@pytest.mark.parametrize("seed", range(5))
def test_arithmetic_drills_are_exact_and_non_negative(seed):
    rng = random.Random(seed)
    for _ in range(200):
        source, target = arithmetic(rng)
        x, op, y = source.removeprefix("Compute: ").split()
        value = {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}.get(op)
        if op == "/":
            assert int(x) % int(y) == 0
            value = int(x) // int(y)
        assert int(target) == value >= 0


def test_no_pretraining_pair_maps_a_question_to_what_a_prompt_style_asks_for():
    """Every style's target for a question (answer, solution, paragraph, program) is what fine-tuning must
    teach; the pretraining may show the question only with its list of numbers."""
    texts, pairs = pretraining_corpus(
        StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",))), problems=300
    )
    records = generate_problems(300, seed=1_000_003, **_difficulty())
    compared = {
        r.question: {format_example(r, style)[1] for style in PROMPT_STYLES if usable(r, style)}
        for r in records
    }
    leaks = [
        (source, target)
        for source, target in pairs
        for question, targets in compared.items()
        if question in source and target in targets
    ]
    assert not leaks, leaks[:3]
    with_question = [pair for pair in pairs if any(r.question in pair[0] for r in records)]
    assert with_question == [numbers(r) for r in records]  # the one task that shows a question
    assert texts == [r.question for r in records]  # prefix LM: the questions alone, never with a solution
    assert len(pairs) == 3 * len(records)  # numbers, solution -> program and one drill per problem


def test_pairs_are_seeded():
    records = generate_problems(20, seed=0)
    assert pretraining_pairs(records, seed=1) == pretraining_pairs(records, seed=1)
    assert pretraining_pairs(records, seed=1) != pretraining_pairs(records, seed=2)


def _difficulty():
    data = StudyConfig(preset="tiny", search=SearchSettings(methods=("lora",))).data.data_config()
    return {k: data[k] for k in ("min_steps", "max_steps", "max_operand")}
