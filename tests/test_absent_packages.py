"""`trainables` imports, trains and evaluates on a machine that has only torch, transformers, peft and
sentence-transformers: the GPU machine this project borrows, where ray, optuna, datasets, evaluate,
rouge-score and bitsandbytes are not installed. `absent_packages/sitecustomize.py` hides them in a child
process exactly as a machine without them would (imports fail, `find_spec` finds nothing).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HIDER = Path(__file__).parent / "absent_packages"
ABSENT = ("ray", "optuna", "datasets", "evaluate", "rouge_score", "nltk", "absl", "bitsandbytes")
ROUGE_PAIRS = [
    ("Natalia sold 48/2 = 24 clips in May. #### 72", "Natalia sold 48/2 = <<48/2=24>>24 clips. #### 72"),
    ("The answer is 5 5 5, café_au lait!", "the ANSWER is 5; cafe au lait"),
    ("", "something"),
    ("!!!", "..."),
]

SCRIPT = """
import json, sys
from pathlib import Path

import trainables.scoring.evaluation, trainables.training.loop, trainables.trial  # noqa: F401
from trainables.data.load import DataConfig, gsm8k_programs, load_math_splits
from trainables.data.records import DataError
from trainables.scoring.metrics import rouge1
from trainables.training.models import ModelError, build_tiny_t5, load_model
from trainables.training.reporting import LocalReporter
from trainables.trial_config import TrialConfig
from trainables.trial import run_trial

out = Path(sys.argv[1])
absent = sys.argv[2].split(",")
result = {"still_hidden": [name for name in absent if sys.modules.get(name, 0) is None]}
splits = load_math_splits(
    DataConfig(source="embedded", train_size=24, dev_size=4, test_size=4, max_steps=1, max_operand=9)
)
texts = [t for r in splits.train for t in (r.question, r.answer_text, r.program or "")]
model_dir = build_tiny_t5(out / "micro", texts=texts, size="micro", seed=0)
train = {
    "epochs": 1, "batch_size": 8, "max_input_tokens": 64, "max_target_tokens": 64,
    "eval": {"batch_size": 8, "max_new_tokens": 6, "metrics": ["accuracy", "perplexity", "rouge1"],
             "test_metrics": ["accuracy", "perplexity", "rouge1"]},
}
result["trials"] = {}
for method in ("lora", "full", "stacked"):
    trial = TrialConfig.from_dict({"method": method, "model": str(model_dir), "train": train})
    final = run_trial(
        trial, splits={"main": splits}, reporter=LocalReporter(out / method, echo=None),
        code_records=gsm8k_programs(splits.train), log=lambda message: None,
    )
    result["trials"][method] = {k: v for k, v in final.items() if isinstance(v, (int, float))}
try:
    load_model(model_dir, device="cpu", quantization="8bit")
except ModelError as err:
    result["qlora_error"] = str(err)
try:
    load_math_splits(DataConfig(source="hub"))
except DataError as err:
    result["hub_error"] = str(err)
pairs = json.loads(sys.argv[3])
result["rouge1"] = [rouge1([p], [r]) for p, r in pairs]
result["loaded"] = sorted(name for name in absent if sys.modules.get(name) is not None)
print(json.dumps(result))
"""


def run_hidden(tmp_path: Path, absent: tuple[str, ...]) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HIDER), str(ROOT)]),
        "SLM_ABSENT_PACKAGES": ",".join(absent),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    args = [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path), ",".join(absent)]
    done = subprocess.run(
        [*args, json.dumps(ROUGE_PAIRS)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a child process that imports torch and trains three micro trials: about 20 s
def test_trainables_train_and_evaluate_without_ray_optuna_datasets_evaluate(tmp_path):
    result = run_hidden(tmp_path, ABSENT)
    assert result["still_hidden"] == list(ABSENT) and result["loaded"] == []
    for method in ("lora", "full", "stacked"):
        metrics = result["trials"][method]
        assert metrics["test/n"] == 4 and 0 <= metrics["test/accuracy"] <= 1
        assert 0 <= metrics["dev/rouge1"] <= 1 and metrics["dev/perplexity"] > 1
    assert "needs bitsandbytes: pip install bitsandbytes" in result["qlora_error"]
    assert "needs the datasets package (pip install datasets)" in result["hub_error"]
    assert "\n" not in result["hub_error"]
    # ROUGE-1 without rouge-score is the number rouge-score gives here
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"])
    expected = [scorer.score(r, p)["rouge1"].fmeasure for p, r in ROUGE_PAIRS]
    assert result["rouge1"] == pytest.approx(expected, abs=1e-12)
