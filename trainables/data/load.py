"""GSM8K, MBPP and the embedded generated problems -> records and train / dev / test splits.

Where the math data comes from (`DataConfig.source`), told to the user in `Splits.description`:
- `local`: jsonl files under `data_dir` (`data_dir/gsm8k/train.jsonl`, or the files directly in `data_dir`).
- `hub`: `datasets.load_dataset("openai/gsm8k", config)`; a failure says to pass a data dir instead.
- `auto`: `local` when `data_dir` is given, else `hub`. It never falls back to the embedded problems.
- `embedded`: problems from `trainables.data.generator` (not GSM8K), only when asked for by name.

Splits: dev is carved out of the official train split by a seeded shuffle and test is the official test
split; `train_size` / `test_size` then keep a seeded subset (a prefix of one fixed shuffle, so a smaller
subset is inside a larger one), in file order. GSM8K publishes no socratic train file on disk
(`train_socratic.jsonl` exists only on the hub): with `config="socratic"` and a local dir lacking it,
`test_socratic.jsonl` itself is split into train / dev / test (test = `test_size`, else 20%), and the
description says, in capitals, that those test scores are not comparable with the official test split.

A record whose `#### N` is missing or not a number is skipped and counted (`Skipped`, reported in the
description); a malformed file raises `DataError` naming file and line. This is the only module that
imports `datasets`, and only inside the hub functions (importing it costs a second).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from trainables.data.generator import generate_problems
from trainables.data.programs import solution_to_program
from trainables.data.records import CodeRecord, DataError, MathRecord, parse_gsm8k_answer

SOURCES = ("auto", "hub", "local", "embedded")
CONFIGS = ("main", "socratic")
"""GSM8K's two configs (the data config of a trial), in table order: the one list of them."""
CODE_DATASETS = ("mbpp", "gsm8k-programs", "solution-programs")
GSM8K_HUB = "openai/gsm8k"
MBPP_HUB = "google-research-datasets/mbpp"
EMBEDDED_SIZES = {"train": 5000, "test": 500}
SOCRATIC_FALLBACK_TEST_FRACTION = 0.2
NO_HUB_HINT = "pass a local data dir (a folder with gsm8k/ and mbpp/) or use the embedded problems"


@dataclass(frozen=True)
class DataConfig:
    """Which math data to load and how to split it."""

    source: str = "auto"
    """`auto`, `hub`, `local` or `embedded` (see the module docstring)."""
    data_dir: str | None = None
    """A folder with `gsm8k/` and `mbpp/` (like shared/data), or with the GSM8K jsonl files directly."""
    config: str = "main"
    """GSM8K config: `main`, or `socratic` (sub-question before each step)."""
    train_size: int | None = None
    """Training records kept after carving dev (None: all); for `embedded`, how many to generate."""
    dev_size: int = 500
    """Dev records carved out of train (for `embedded`: generated)."""
    test_size: int | None = None
    """Test records kept (None: all); for `embedded`, how many to generate (None: 500)."""
    seed: int = 0
    """Seed of the dev carve, the subsets and the embedded generator."""
    min_steps: int = 1
    """Embedded only: the fewest arithmetic steps in a problem."""
    max_steps: int = 2
    """Embedded only: the most arithmetic steps in a problem."""
    max_operand: int = 20
    """Embedded only: the largest fresh number in a problem."""

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}, got {self.config!r}")
        if self.source == "local" and not self.data_dir:
            raise ValueError("source 'local' needs data_dir")
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.dev_size < 1:
            raise ValueError(f"dev_size must be >= 1, got {self.dev_size}")
        if not 1 <= self.min_steps <= self.max_steps <= 10:
            raise ValueError(
                f"need 1 <= min_steps <= max_steps <= 10, got {self.min_steps}, {self.max_steps}"
            )
        if self.max_operand < 2:
            raise ValueError(f"max_operand must be >= 2, got {self.max_operand}")


@dataclass(frozen=True)
class Skipped:
    """A record left out because its final answer is missing or not a number."""

    where: str
    """`file:line` or `hub-name config/split row N`."""
    reason: str
    """Why, e.g. `no '#### N' final answer line`."""


@dataclass(frozen=True)
class Loaded:
    """The records of one file or hub split, and the ones skipped."""

    records: list[MathRecord]
    """The usable records, in file order, with programs filled where the solution converts."""
    skipped: list[Skipped] = field(default_factory=list)
    """Records left out for a bad final answer."""


@dataclass(frozen=True)
class Splits:
    """Train / dev / test records and a sentence saying exactly what they are."""

    train: list[MathRecord]
    """Training records, in file order."""
    dev: list[MathRecord]
    """Dev records (carved out of the training file), in file order."""
    test: list[MathRecord]
    """Test records, in file order."""
    description: str
    """What was loaded from where, the split sizes, and any skipped records: show it to the user."""
    skipped: tuple[Skipped, ...] = ()
    """Records left out of the loaded files for a bad final answer."""


def skipped_summary(skipped: Sequence[Skipped]) -> str:
    """`'skipped 3 record(s) with a bad answer (first: train.jsonl:17: ...)'`, or `''` for none."""
    if not skipped:
        return ""
    first = skipped[0]
    return f"skipped {len(skipped)} record(s) with a bad answer (first: {first.where}: {first.reason})"


def load_gsm8k_file(path: str | Path, *, source: str | None = None) -> Loaded:
    """Read a GSM8K jsonl file (`question`, `answer`) into records with programs.

    Args:
        path: the jsonl file.
        source: the records' source; None means `gsm8k/socratic` when the file has ` ** ` sub-questions,
            else `gsm8k/main`.

    Raises:
        DataError: for a missing or empty file, malformed JSON or a missing field (naming file and line),
            or a file in which no record has a usable answer.
    """
    path = Path(path)
    rows = ((f"{path}:{n}", row) for n, row in read_jsonl(path))
    return _math_records(rows, source=source, origin=str(path))


def load_gsm8k_hub(config: str = "main", split: str = "train") -> Loaded:
    """Load `openai/gsm8k` from the Hugging Face hub.

    Raises:
        DataError: when the hub cannot be reached or has no such config/split (saying what to do instead).
    """
    rows = _hub_rows(GSM8K_HUB, config, split)
    named = ((f"{GSM8K_HUB} {config}/{split} row {i + 1}", dict(row)) for i, row in enumerate(rows))
    return _math_records(named, source=f"gsm8k/{config}", origin=f"{GSM8K_HUB} {config}/{split}")


def load_math_splits(cfg: DataConfig) -> Splits:
    """Load train / dev / test as `cfg` says (see the module docstring for the rules).

    Raises:
        DataError: for missing files, an unreachable hub, or sizes larger than the data.
    """
    if cfg.source == "embedded":
        return _embedded_splits(cfg)
    if cfg.source == "hub" or (cfg.source == "auto" and not cfg.data_dir):
        train, test = load_gsm8k_hub(cfg.config, "train"), load_gsm8k_hub(cfg.config, "test")
        return _split(cfg, train, test, origin=f"GSM8K {cfg.config} from the hub ({GSM8K_HUB}): train")
    folder = _gsm8k_folder(Path(cfg.data_dir))
    suffix = "" if cfg.config == "main" else "_socratic"
    train_file, test_file = folder / f"train{suffix}.jsonl", folder / f"test{suffix}.jsonl"
    if cfg.config == "socratic" and not train_file.exists() and test_file.exists():
        origin = (
            f"GSM8K socratic from {folder}: NO train_socratic.jsonl THERE, SO {test_file.name} WAS SPLIT into "
            "train / dev / test, and test scores are NOT COMPARABLE with the official test split"
        )
        return _split(cfg, load_gsm8k_file(test_file), None, origin=origin)
    train, test = load_gsm8k_file(train_file), load_gsm8k_file(test_file)
    return _split(cfg, train, test, origin=f"GSM8K {cfg.config} from {folder}: train")


def load_mbpp_file(path: str | Path) -> list[CodeRecord]:
    """Read MBPP's jsonl (`text`, `code`, `test_list`); `\\r\\n` and stray `\\r` in code become `\\n`.

    Raises:
        DataError: for a missing or empty file, malformed JSON or a missing field (naming file and line).
    """
    path = Path(path)
    return [_code_record(row, f"{path}:{n}") for n, row in read_jsonl(path)]


def load_mbpp_hub(splits: Sequence[str] = ("train", "validation", "test", "prompt")) -> list[CodeRecord]:
    """Load all 974 MBPP tasks (`full` config, every split, in task order) from the Hugging Face hub.

    Raises:
        DataError: when the hub cannot be reached.
    """
    rows = [
        (f"{MBPP_HUB} full/{s} row {i + 1}", dict(r))
        for s in splits
        for i, r in enumerate(_hub_rows(MBPP_HUB, "full", s))
    ]
    rows.sort(key=lambda item: item[1].get("task_id", 0))
    return [_code_record(row, where) for where, row in rows]


def gsm8k_programs(records: Sequence[MathRecord]) -> list[CodeRecord]:
    """The GSM8K-derived coding dataset: question -> its one-line program (records without one are left out).

    Raises:
        DataError: if no record has a program.
    """
    out = [CodeRecord(text=r.question, code=r.program, source="gsm8k-programs") for r in records if r.program]
    if not out:
        raise DataError(f"none of the {len(records)} math records has a program")
    return out


def solution_programs(records: Sequence[MathRecord]) -> list[CodeRecord]:
    """A coding dataset from the math train split that is not the math task: solution -> program.

    The text is the worked solution (no-breakdown, `trainables.data.prompts.solution_to_program`), never the
    question, so stage 1 learns to write programs without seeing the question -> program mapping that the
    `code` style is scored on.

    Raises:
        DataError: if no record has a program.
    """
    from trainables.data.prompts import no_breakdown

    out = [
        CodeRecord(text=no_breakdown(r)[1], code=r.program, source="solution-programs")
        for r in records
        if r.program
    ]
    if not out:
        raise DataError(f"none of the {len(records)} math records has a program")
    return out


def load_code_dataset(
    name: str, data_dir: str | None = None, *, math_train: Sequence[MathRecord] = ()
) -> list[CodeRecord]:
    """Stacked LoRA's stage-1 coding dataset.

    Args:
        name: `mbpp` (from `data_dir/mbpp/mbpp.jsonl`, or the hub without a data dir) or `gsm8k-programs`.
        data_dir: the data folder, as in `DataConfig.data_dir`.
        math_train: for `gsm8k-programs`, the train split in use (never dev or test, so nothing leaks).

    Raises:
        ValueError: for an unknown name.
        DataError: for missing data.
    """
    if name not in CODE_DATASETS:
        raise ValueError(f"code dataset must be one of {CODE_DATASETS}, got {name!r}")
    if name in ("gsm8k-programs", "solution-programs"):
        if not math_train:
            raise DataError(f"{name} needs the math train split (math_train)")
        return gsm8k_programs(math_train) if name == "gsm8k-programs" else solution_programs(math_train)
    if not data_dir:
        return load_mbpp_hub()
    for candidate in (Path(data_dir) / "mbpp" / "mbpp.jsonl", Path(data_dir) / "mbpp.jsonl"):
        if candidate.is_file():
            return load_mbpp_file(candidate)
    raise DataError(f"no mbpp/mbpp.jsonl or mbpp.jsonl in {data_dir}")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file.

    Raises:
        DataError: naming the file (and line) when it is missing, not UTF-8, empty or holds a bad line.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(encoding="utf-8") as handle:
        empty = True
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                empty = False
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{path}:{number}: malformed JSON: {err.msg} (column {err.colno})"
                    ) from None
                except RecursionError:  # '[' * 100000: the decoder recurses once per level
                    raise DataError(f"{path}:{number}: malformed JSON: nested too deeply") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
                yield number, row
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text") from None
    if empty:
        raise DataError(f"{path}: empty file")


def _field(row: dict, name: str, where: str, kind: type = str):
    if name not in row:
        raise DataError(f"{where}: missing field {name!r}")
    if not isinstance(row[name], kind):
        raise DataError(f"{where}: field {name!r} should be {kind.__name__}, got {type(row[name]).__name__}")
    return row[name]


def _math_records(rows: Iterator[tuple[str, dict]], *, source: str | None, origin: str) -> Loaded:
    records, skipped = [], []
    for where, row in rows:
        question, answer_text = _field(row, "question", where), _field(row, "answer", where)
        try:
            record = parse_gsm8k_answer(question, answer_text, source=source or "gsm8k/main")
        except ValueError as err:
            skipped.append(Skipped(where, str(err)))
            continue
        records.append(replace(record, program=solution_to_program(record.steps, record.answer)))
    if not records:
        raise DataError(f"{origin}: no record has a usable final answer ({skipped_summary(skipped)})")
    if source is None and any(r.subquestions for r in records):
        records = [replace(r, source="gsm8k/socratic") for r in records]
    return Loaded(records, skipped)


def _code_record(row: dict, where: str) -> CodeRecord:
    tests = _field(row, "test_list", where, list)
    if not all(isinstance(t, str) for t in tests):
        raise DataError(f"{where}: field 'test_list' should hold strings")
    code = _field(row, "code", where).replace("\r\n", "\n").replace("\r", "\n").rstrip()
    return CodeRecord(text=_field(row, "text", where), code=code, test_list=tuple(tests), source="mbpp")


def _hub_rows(name: str, config: str, split: str):
    """`datasets.load_dataset`, with any failure turned into a one-line DataError."""
    try:
        import datasets  # here, not at the top: importing it takes a second and most runs read local files
    except ImportError as err:  # e.g. a GPU machine set up with torch and transformers only
        raise DataError(
            f"loading {name} from the Hugging Face hub needs the datasets package (pip install datasets); "
            f"{NO_HUB_HINT}"
        ) from err
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown name, network, cache: to the user all mean "not from the hub"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(
            f"could not load {name} ({config}/{split}) from the Hugging Face hub "
            f"({type(err).__name__}: {reason}); {NO_HUB_HINT}"
        ) from err


def _gsm8k_folder(data_dir: Path) -> Path:
    for folder in (data_dir / "gsm8k", data_dir):
        if any((folder / f).is_file() for f in ("test.jsonl", "train.jsonl", "test_socratic.jsonl")):
            return folder
    raise DataError(f"no GSM8K files in {data_dir}: expected {data_dir}/gsm8k/train.jsonl and test.jsonl")


def _take(order: Sequence[int], size: int | None, what: str) -> list[int]:
    """The first `size` indices of a fixed shuffle (all for None), back in file order."""
    if size is not None and size > len(order):
        raise DataError(f"{what}={size} but only {len(order)} records are available")
    return sorted(order[:size])


def _split(cfg: DataConfig, train: Loaded, test: Loaded | None, *, origin: str) -> Splits:
    """Carve dev out of `train` (and test too when there is no test file) by one seeded shuffle; then subsets."""
    n = len(train.records)
    order = random.Random(cfg.seed).sample(range(n), n)
    if test is None:  # the socratic fallback: test is carved first, then dev
        n_test = cfg.test_size if cfg.test_size is not None else round(SOCRATIC_FALLBACK_TEST_FRACTION * n)
        test_records, test_idx, order = train.records, sorted(order[:n_test]), order[n_test:]
        test_part = f" / test {len(test_idx)}"
    else:
        test_records = test.records
        test_order = random.Random(cfg.seed).sample(range(len(test_records)), len(test_records))
        test_idx = _take(test_order, cfg.test_size, "test_size")
        test_part = f"; test {_kept(len(test_idx), len(test_records))}"
    if cfg.dev_size >= len(order):
        raise DataError(f"{origin}: dev_size={cfg.dev_size} leaves no training records out of {len(order)}")
    dev_idx, rest = sorted(order[: cfg.dev_size]), order[cfg.dev_size :]
    train_idx = _take(rest, cfg.train_size, "train_size")
    skipped = tuple(train.skipped + (test.skipped if test else []))
    description = f"{origin} {n} -> train {_kept(len(train_idx), len(rest))} / dev {len(dev_idx)}{test_part}"
    description += f" (seed {cfg.seed})" + (f"; {skipped_summary(skipped)}" if skipped else "")
    return Splits(
        [train.records[i] for i in train_idx],
        [train.records[i] for i in dev_idx],
        [test_records[i] for i in test_idx],
        description,
        skipped,
    )


def _kept(kept: int, available: int) -> str:
    return f"{kept}" if kept == available else f"{kept} of {available}"


def _embedded_splits(cfg: DataConfig) -> Splits:
    """Generated train / dev / test with distinct seeds; no question text appears in two splits."""
    sizes = {
        "test": cfg.test_size or EMBEDDED_SIZES["test"],
        "dev": cfg.dev_size,
        "train": cfg.train_size or EMBEDDED_SIZES["train"],
    }
    settings = {"min_steps": cfg.min_steps, "max_steps": cfg.max_steps, "max_operand": cfg.max_operand}
    splits: dict[str, list[MathRecord]] = {}
    seen: set[str] = set()
    for offset, name in enumerate(("test", "dev", "train")):  # test first: it must not depend on train's size
        try:
            records = generate_problems(
                sizes[name],
                seed=3 * cfg.seed + offset,
                socratic=cfg.config == "socratic",
                exclude=seen,
                **settings,
            )
        except ValueError as err:
            raise DataError(f"embedded {name} split: {err}") from None
        seen.update(r.question for r in records)
        splits[name] = records
    description = (
        f"EMBEDDED generated problems (not GSM8K): train {sizes['train']} / dev {sizes['dev']} / "
        f"test {sizes['test']}, {cfg.min_steps}-{cfg.max_steps} steps, operands <= {cfg.max_operand}, "
        f"{cfg.config} format, seed {cfg.seed}"
    )
    return Splits(splits["train"], splits["dev"], splits["test"], description)
