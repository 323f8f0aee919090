"""Shared fixtures: an offline hub, the real-data directory, and a seeded micro T5 built once per session.

The hub is switched off before anything imports `huggingface_hub`, so a test that would download a model
or a dataset fails at once instead of reaching for the network.
"""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ[_var] = "1"

from pathlib import Path  # noqa: E402  (the environment above must be set first)

import pytest  # noqa: E402

MICRO_SEED = 0


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: micro models gain nothing from more, and tests must not fight over 2 cores."""
    import torch

    torch.set_num_threads(1)


RAY_GROUP = "ray"
"""Under pytest-xdist (`-n 2 --dist loadgroup`, the README's test command) the tests that start Ray run on one
worker, one at a time, while the other worker takes the rest: two Ray clusters starting at once on two cores
miss Ray's start-up deadlines (BENCHMARKS.md, Session 7), and the shared studies, session fixtures, then run
once (a session fixture runs once per worker). A test that starts Ray is a `slow` test of a module that
starts it (`RAY_SIGNS`; the module's other tests take seconds and start none), or a user of a shared study."""
SHARED_STUDIES = ("every_method_study", "finished_lora_study")
"""Session fixtures that each run a whole study (minutes)."""
RAY_SIGNS = (
    "start_study",
    "study.run",
    "study.confirm",
    "ray.init",
    "Tuner(",
    *SHARED_STUDIES,
)
"""What the source of a module that starts Ray contains: a study through `study.run` / `study.confirm` (or
`test_tuner.start_study`), a cluster of its own, a Tuner, or one of the shared finished studies."""


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the xdist_group marks into the test ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put the tests that start Ray on one xdist worker (`RAY_GROUP`); in a worker, start the `slow` tests
    first; skip tests marked `gpu` when there is no CUDA device."""
    starts_ray: dict[str, bool] = {}
    for item in items:
        path = str(item.path)
        if path not in starts_ray:
            starts_ray[path] = any(sign in item.path.read_text() for sign in RAY_SIGNS)
        shares_a_study = any(name in item.fixturenames for name in SHARED_STUDIES)
        if shares_a_study or (starts_ray[path] and item.get_closest_marker("slow")):
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))
    if hasattr(config, "workerinput"):  # an xdist worker: every worker sorts alike, so collections agree
        # Longest first: the minutes-long studies are handed out while the other worker still has seconds-long
        # tests to take, instead of one worker running the last study while the other idles.
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept
    if getattr(config.option, "loadgroup", False):
        _group_ids(items)
    _skip_gpu_tests(items)


def _group_ids(items: list[pytest.Item]) -> None:
    """Give each grouped test the id xdist's scheduler groups by (`<id>@<group>`). xdist 3.8 writes it to
    `item._nodeid`, which pytest 9.2's `nodeid` (`str(item._id)`) no longer reads: without this, no group."""
    try:
        from _pytest.nodeid import NodeId  # pytest >= 9.2; before it, xdist's own renaming works
    except ImportError:
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks})
        if names and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


def _skip_gpu_tests(items: list[pytest.Item]) -> None:
    """Skip tests marked `gpu` when there is no CUDA device (torch is imported only if one is marked)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data (`gsm8k/`, `mbpp/`) from SLM_DATA_DIR; skips the test when it is unset or missing."""
    raw = os.environ.get("SLM_DATA_DIR")
    if not raw:
        pytest.skip("SLM_DATA_DIR is not set; point it at the data directory (e.g. ../shared/data)")
    path = Path(raw).expanduser()
    if not path.is_dir():
        pytest.skip(f"SLM_DATA_DIR={raw!r} is not a directory")
    return path


@pytest.fixture(scope="session")
def micro_texts() -> list[str]:
    """A few hundred short math texts (questions, solutions with calculator marks, programs)."""
    from trainables.data.generator import generate_problems

    records = generate_problems(100, seed=MICRO_SEED, min_steps=1, max_steps=3, max_operand=100)
    texts = []
    for record in records:
        texts += [record.question, record.answer_text, record.solution]
        if record.program:
            texts.append(record.program)
    return texts


@pytest.fixture(scope="session")
def micro_t5_dir(tmp_path_factory: pytest.TempPathFactory, micro_texts: list[str]) -> Path:
    """A micro T5 (~157k parameters) and its tokenizer, saved once per session like a hub model."""
    from trainables.training.models import build_tiny_t5

    return build_tiny_t5(
        tmp_path_factory.mktemp("models") / "micro-t5", texts=micro_texts, size="micro", seed=0
    )


@pytest.fixture
def micro_t5(micro_t5_dir: Path):
    """(model, tokenizer): a fresh copy of the micro T5 on the CPU, in eval mode, torch seeded with 0."""
    import torch

    from trainables.training.models import load_model, load_tokenizer

    torch.manual_seed(MICRO_SEED)
    return load_model(micro_t5_dir, device="cpu"), load_tokenizer(micro_t5_dir)


@pytest.fixture
def micro_tokenizer(micro_t5_dir: Path):
    """The micro T5's tokenizer alone, freshly loaded (for tests that need no model)."""
    from trainables.training.models import load_tokenizer

    return load_tokenizer(micro_t5_dir)


@pytest.fixture(scope="session")
def micro_splits():
    """Embedded generated problems: 64 train, 8 dev, 8 test records (one-step, small numbers)."""
    from trainables.data.load import DataConfig, load_math_splits

    config = DataConfig(
        source="embedded",
        train_size=64,
        dev_size=8,
        test_size=8,
        seed=0,
        min_steps=1,
        max_steps=1,
        max_operand=9,
    )
    return load_math_splits(config)


@pytest.fixture(scope="session")
def finished_lora_study(tmp_path_factory: pytest.TempPathFactory, micro_t5_dir: Path) -> Path:
    """The storage folder of a finished tiny LoRA study (`test_tuner.LORA_STUDY`, study `lora` in it), run
    once per session: each test that starts from a finished study copies it before running anything on it."""
    from test_tuner import LORA_STUDY, finish, start_study

    root = tmp_path_factory.mktemp("lora-study")
    finish(start_study(LORA_STUDY, tmp_path=root, model=micro_t5_dir))
    return root / "out"


@pytest.fixture(scope="session")
def every_method_study(tmp_path_factory: pytest.TempPathFactory, micro_t5_dir: Path) -> tuple[Path, str]:
    """(study folder, study.run's output) of a finished tiny study of every method (`test_tuner.EVERY_METHOD`),
    run once per session for the end-to-end tests that only read it; the one test study with the memory
    check (every method measured before Ray starts)."""
    from test_tuner import EVERY_METHOD, finish, start_study

    root = tmp_path_factory.mktemp("every-method-study")
    output = finish(start_study(EVERY_METHOD, tmp_path=root, model=micro_t5_dir, memory_check=True))
    return root / "out" / "e2e", output
