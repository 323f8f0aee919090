"""A seeded generator of GSM8K-style word problems: the embedded default dataset.

A problem is a little story about one quantity (a count of things, money, a cost or an age) that changes
in one to several arithmetic steps. It starts from a given (`Ava has 7 marbles.`) or a first calculation
(`Ava collects 3 apples on Monday and 4 apples on Tuesday.`), and each further step is a chained
template that uses the previous result and one fresh operand (`Ben has 2 times as many apples as Ava.`).
The question is the story's facts followed by the last step's sub-question. Each record has GSM8K's
format exactly, so every prompt style and metric treats it like real data:

    question:     Ava collects 3 apples on Monday and 4 apples on Tuesday. Ben has 2 times as many apples
                  as Ava. How many apples does Ben have?
    answer_text:  How many apples does Ava collect in total? ** Ava collects 3 + 4 = <<3+4=7>>7 apples in total.
                  How many apples does Ben have? ** Ben has 7 * 2 = <<7*2=14>>14 apples.
                  #### 14
    program:      a = 3 + 4; b = a * 2; print(b)

With `socratic=False` the ` ** ` sub-questions are left out of `answer_text` and `subquestions`, as in
GSM8K's main config. Answers are non-negative integers: subtractions stay positive and divisions are exact.
Difficulty is set by the number of steps and the largest fresh operand, so a tiny model can learn the easy
end (one step, operands up to 10) while the hard end approaches GSM8K's length.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field

from trainables.data.arithmetic import write_annotation
from trainables.data.programs import solution_to_program
from trainables.data.records import MathRecord

NAMES = (
    "Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hugo", "Isla", "Jamal", "Kira", "Liam",
    "Maya", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe",
)  # fmt: skip
NOUNS = ("apples", "marbles", "stickers", "pencils", "cookies", "books", "shells", "cards", "stamps",
         "balloons", "oranges", "toy cars", "beads", "crayons", "eggs")  # fmt: skip
ITEMS = ("notebooks", "pens", "cupcakes", "tickets", "plants", "comic books", "sandwiches")
THINGS = ("a book", "a hat", "a board game", "lunch", "a kite", "a movie ticket", "a scarf", "paint",
          "a backpack", "a puzzle", "a plant pot", "a bus ticket", "a T-shirt", "a phone case")  # fmt: skip
RATES = (("bakes", "bake", "cookies"), ("picks", "pick", "strawberries"), ("collects", "collect", "shells"),
         ("makes", "make", "bracelets"), ("folds", "fold", "paper cranes"))  # fmt: skip
FRACTIONS = {2: "half", 3: "a third", 4: "a quarter"}
CAPS = {"count": 100_000, "money": 100_000, "cost": 100_000, "age": 120}


@dataclass(frozen=True)
class Template:
    """One arithmetic step as text: `{v}` is the previous result (or a fresh operand when starting)."""

    kind: str
    """The quantity the step applies to: count (S has v nouns), money (S has $v), cost (S pays $v), age."""
    op: str
    """`+`, `-`, `*` or `/`: the result is `v op n`."""
    fact: str
    """The sentence that gives `n` (and `v` for a start) in the question."""
    subq: str
    """The Socratic sub-question the step answers."""
    step: str
    """The solution line; `{calc}` becomes `v op n = <<v op n=r>>r`."""
    subject: str = "S"
    """Who holds the result: `S` (unchanged), `F` (a new person) or `each friend`."""
    new_kind: str = ""
    """The result's kind when it differs from `kind` (e.g. selling turns a count into money)."""
    max_n: int = 0
    """The largest fresh operand this wording allows (0: `max_operand`)."""
    terminal: bool = False
    """Only as the last step (later steps would be ambiguous)."""
    new_noun: bool = False
    """The result counts the step's `{item}` from now on (money spent on pens -> a count of pens)."""


T = Template
STARTS = (
    T("count", "+", "{S} collects {v} {noun} on Monday and {n} {noun} on Tuesday.",
      "How many {noun} does {S} collect in total?", "{S} collects {calc} {noun} in total."),
    T("count", "*", "{S} has {v} boxes with {n} {noun} in each box.", "How many {noun} does {S} have?",
      "{S} has {calc} {noun}."),
    T("rate", "*", "{S} {verb3} {v} {noun} every day for {n} days.",
      "How many {noun} does {S} {verb} in {n} days?", "{S} {verb3} {calc} {noun}.", new_kind="count"),
    T("count", "-", "{S} had {v} {noun} and gave {n} of them to {F}.", "How many {noun} does {S} have left?",
      "{S} has {calc} {noun} left."),
    T("count", "/", "{S} shares {v} {noun} equally among {n} friends.", "How many {noun} does each friend get?",
      "Each friend gets {calc} {noun}.", subject="each friend", max_n=10),
    T("money", "*", "{S} earns ${v} an hour and works {n} hours.", "How much money does {S} earn?",
      "{S} earns {calc}."),
    T("money", "+", "{S} has ${v} and gets ${n} from {F}.", "How much money does {S} have now?",
      "{S} has {calc} now."),
    T("cost", "*", "{S} buys {v} {item} that cost ${n} each.", "How much does {S} spend on the {item}?",
      "{S} spends {calc} on the {item}."),
    T("age", "+", "{S} is {v} years old and {F} is {n} years older.", "How old is {F}?",
      "{F} is {calc} years old.", subject="F"),
)  # fmt: skip
GIVENS = {"count": "{S} has {v} {noun}.", "money": "{S} has ${v}.", "cost": "{S} spends ${v} on {thing}.",
          "age": "{S} is {v} years old."}  # fmt: skip
CHAINS = (
    T("count", "+", "Then {S} finds {n} more {noun}.", "How many {noun} does {S} have now?",
      "{S} has {calc} {noun} now."),
    T("count", "-", "{S} gives {n} {noun} to {F}.", "How many {noun} does {S} have left?",
      "{S} has {calc} {noun} left."),
    T("count", "-", "{S} loses {n} of the {noun}.", "How many {noun} does {S} have after losing some?",
      "{S} has {calc} {noun} left."),
    T("count", "*", "{F} has {n} times as many {noun} as {S}.", "How many {noun} does {F} have?",
      "{F} has {calc} {noun}.", subject="F", max_n=10),
    T("count", "+", "{F} has {n} more {noun} than {S}.", "How many {noun} does {F} have?",
      "{F} has {calc} {noun}.", subject="F"),
    T("count", "-", "{F} has {n} fewer {noun} than {S}.", "How many {noun} does {F} have?",
      "{F} has {calc} {noun}.", subject="F"),
    T("count", "/", "{S} shares the {noun} equally among {n} friends.", "How many {noun} does each friend get?",
      "Each friend gets {calc} {noun}.", subject="each friend", max_n=10),
    T("count", "*", "{S} sells each of the {noun} for ${n}.", "How much money does {S} make?",
      "{S} makes {calc}.", new_kind="money", max_n=10),
    T("money", "+", "Then {S} earns ${n} more.", "How much money does {S} have now?", "{S} has {calc} now."),
    T("money", "-", "{S} spends ${n} on {thing}.", "How much money does {S} have left?", "{S} has {calc} left."),
    T("money", "/", "{S} splits the money equally among {n} friends.", "How much money does each friend get?",
      "Each friend gets {calc}.", subject="each friend", max_n=10),
    T("money", "*", "{F} has {n} times as much money as {S}.", "How much money does {F} have?",
      "{F} has {calc}.", subject="F", max_n=10),
    T("money", "/", "{S} spends all of it on {item} that cost ${n} each.", "How many {item} does {S} buy?",
      "{S} buys {calc} {item}.", new_kind="count", new_noun=True),
    T("cost", "+", "{S} also pays ${n} for {thing}.", "How much does {S} spend in total?",
      "{S} spends {calc} in total."),
    T("cost", "/", "{S} splits the cost equally among {n} friends.", "How much does each friend pay?",
      "Each friend pays {calc}.", subject="each friend", max_n=10),
    T("age", "+", "{F} is {n} years older than {S}.", "How old is {F}?", "{F} is {calc} years old.",
      subject="F"),
    T("age", "-", "{F} is {n} years younger than {S}.", "How old is {F}?", "{F} is {calc} years old.",
      subject="F"),
    T("age", "*", "{F} is {n} times as old as {S}.", "How old is {F}?", "{F} is {calc} years old.",
      subject="F", max_n=4),
    T("age", "/", "{F} is {nth} as old as {S}.", "How old is {F}?", "{F} is {calc} years old.",
      subject="F", max_n=4),
    T("age", "+", "{S} will have a party in {n} years.", "How old will {S} be at the party?",
      "{S} will be {calc} years old at the party.", terminal=True),
)  # fmt: skip


@dataclass
class _Story:
    """The problem being written: its texts so far and the quantity the next step builds on."""

    rng: random.Random
    max_operand: int
    words: dict
    """Template fields: `S` (who holds the current quantity), `noun`, `thing`, `verb`, `verb3`."""
    kind: str = "count"
    value: int = 0
    used: set = field(default_factory=set)
    """Names and things already in the story, so a new person or purchase is never a repeat."""
    results: list = field(default_factory=list)
    facts: list = field(default_factory=list)
    subqs: list = field(default_factory=list)
    steps: list = field(default_factory=list)

    def apply(self, template: Template, v: int) -> bool:
        """Write one step on top of `v`; False (and nothing written) when no fresh operand suits `v`."""
        n = _operand(self.rng, template, v, max_operand=self.max_operand, avoid=self.results)
        if n is None:
            return False
        result = {"+": v + n, "-": v - n, "*": v * n, "/": v // n}[template.op]
        kind = template.new_kind or self.kind
        if result > CAPS[kind]:
            return False
        # NAMES (25) outnumber the people of a story (at most 11); things and items may repeat in long ones
        other = self.rng.choice([name for name in NAMES if name not in self.used])
        thing = self.rng.choice([thing for thing in THINGS if thing not in self.used] or THINGS)
        item = self.rng.choice([item for item in ITEMS if item not in self.used] or ITEMS)
        self.used.update((other, thing, item))
        words = {
            **self.words,
            "F": other,
            "thing": thing,
            "item": item,
            "v": v,
            "n": n,
            "nth": FRACTIONS.get(n, ""),
        }
        dollar = "$" if kind in ("money", "cost") else ""
        expr = f"{v}{template.op}{n}"
        calc = f"{v} {template.op} {n} = {dollar}{write_annotation(expr, result)}{result}"
        self.facts.append(_sentence(template.fact, words))
        self.subqs.append(_sentence(template.subq, words))
        self.steps.append(_sentence(template.step, {**words, "calc": calc}))
        self.words["S"] = {"S": self.words["S"], "F": other}.get(template.subject, template.subject)
        if template.new_noun:
            self.words["noun"] = item
        self.kind, self.value = kind, result
        self.results.append(result)
        return True


def generate_problems(
    n: int,
    *,
    seed: int,
    min_steps: int = 1,
    max_steps: int = 2,
    max_operand: int = 20,
    socratic: bool = True,
    exclude: Collection[str] = (),
) -> list[MathRecord]:
    """Generate `n` distinct GSM8K-style word problems; the same arguments give the same problems.

    Args:
        n: how many problems.
        seed: the random seed.
        min_steps: the fewest arithmetic steps in a problem (at least 1).
        max_steps: the most arithmetic steps in a problem (at most 10).
        max_operand: the largest fresh number a problem introduces (at least 2); results may be larger.
        socratic: write the sub-questions into `answer_text` and `subquestions` (GSM8K's socratic config).
        exclude: question texts not to produce (e.g. another split's), so splits never share a problem.

    Raises:
        ValueError: for a bad argument, or when the settings allow fewer than `n` distinct problems.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_steps <= max_steps <= 10:
        raise ValueError(
            f"need 1 <= min_steps <= max_steps <= 10, got min_steps={min_steps}, max_steps={max_steps}"
        )
    if max_operand < 2:
        raise ValueError(f"max_operand must be >= 2, got {max_operand}")
    rng = random.Random(seed)
    seen, records = set(exclude), []
    for _ in range(50 * n + 1000):
        if len(records) == n:
            return records
        record = _problem(rng, rng.randint(min_steps, max_steps), max_operand=max_operand, socratic=socratic)
        if record is not None and record.question not in seen:
            seen.add(record.question)
            records.append(record)
    if len(records) == n:
        return records
    raise ValueError(
        f"found only {len(records)} of {n} distinct problems with max_steps={max_steps}, "
        f"max_operand={max_operand}; allow more steps or larger operands"
    )


def _problem(rng: random.Random, n_steps: int, *, max_operand: int, socratic: bool) -> MathRecord | None:
    """One problem with exactly `n_steps` steps, or None when the random choices led to a dead end."""
    name = rng.choice(NAMES)
    verb3, verb, rate_noun = rng.choice(RATES)
    words = {"S": name, "noun": rng.choice(NOUNS), "thing": rng.choice(THINGS)}
    story = _Story(rng, max_operand, {**words, "verb3": verb3, "verb": verb}, used={name, words["thing"]})
    if rng.random() < 0.5:  # start with a first calculation on two fresh operands ...
        start = rng.choice(STARTS)
        story.kind = start.new_kind or start.kind
        if start.kind == "rate":
            story.words["noun"] = rate_noun
        if not story.apply(start, rng.randint(1 if start.op == "+" else 2, max_operand)):
            return None
    else:  # ... or from a given quantity
        story.kind = rng.choice(tuple(GIVENS))
        story.value = rng.randint(2, max_operand)
        story.facts.append(_sentence(GIVENS[story.kind], {**story.words, "v": story.value}))
    while len(story.steps) < n_steps:
        last = len(story.steps) == n_steps - 1
        options = [
            t
            for t in CHAINS
            if t.kind == story.kind
            and (last or not t.terminal)
            and not (t.subject == "each friend" == story.words["S"])
        ]
        if not options or not story.apply(rng.choice(options), story.value):
            return None
    lines = (
        [f"{q} ** {s}" for q, s in zip(story.subqs, story.steps, strict=True)]
        if socratic
        else list(story.steps)
    )
    answer = str(story.value)
    return MathRecord(
        question=" ".join(story.facts + [story.subqs[-1]]),
        answer_text="\n".join(lines + [f"#### {answer}"]),
        steps=tuple(story.steps),
        subquestions=tuple(story.subqs) if socratic else (),
        answer=answer,
        program=solution_to_program(story.steps, answer),
        source="embedded",
    )


def _operand(rng: random.Random, template: Template, v: int, *, max_operand: int, avoid: list) -> int | None:
    """A fresh operand that keeps the result a non-negative integer; prefer one unequal to earlier results."""
    top = min(template.max_n or max_operand, max_operand)
    if template.op == "+":
        candidates = range(1, top + 1)
    elif template.op == "-":
        candidates = range(1, min(top, v - 1) + 1)
    elif template.op == "*":
        candidates = range(2, top + 1)
    else:
        candidates = [d for d in range(2, min(top, v - 1) + 1) if v % d == 0]
        if "{nth}" in template.fact:
            candidates = [d for d in candidates if d in FRACTIONS]
    preferred = [c for c in candidates if c not in avoid and c != v] or list(candidates)
    return rng.choice(preferred) if preferred else None


def _sentence(template: str, words: dict) -> str:
    """Fill a template and capitalise its first letter (`each friend gets` -> `Each friend gets`)."""
    text = template.format(**words)
    return text[0].upper() + text[1:]
