"""ROUGE-1 as an `evaluate` metric that loads from this file, so scoring never needs the Hugging Face hub.

It wraps the same scorer as the hub's `rouge` metric (`rouge_score.rouge_scorer.RougeScorer`) but returns
the plain mean of the per-example scores: the hub metric's default bootstrap aggregator resamples with
NumPy's global random state, so its "mean" changes from run to run.

Load it with `evaluate.load("<path to>/rouge1.py")`; `trainables.scoring.metrics.rouge1` does that for you.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """ROUGE-1: the overlap of unigrams between a prediction and a reference, as precision,
recall and their F-measure, averaged over examples. Text is lower-cased and split on anything that is not
a letter or digit (the `rouge_score` default tokenizer)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts.
    references: list of reference texts, one per prediction.
    use_stemmer: apply the Porter stemmer before matching (default False, as the hub's `rouge` metric).
Returns:
    rouge1: mean ROUGE-1 F-measure in [0, 1].
    rouge1_precision: mean ROUGE-1 precision.
    rouge1_recall: mean ROUGE-1 recall.
Examples:
    >>> rouge = evaluate.load("trainables/scoring/metric_modules/rouge1.py")
    >>> rouge.compute(predictions=["the cat sat"], references=["the cat sat"])["rouge1"]
    1.0
"""

_CITATION = """@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
}"""


class Rouge1(evaluate.Metric):
    """Mean ROUGE-1 precision, recall and F-measure over prediction/reference pairs."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references, use_stemmer: bool = False) -> dict[str, float]:
        if not predictions:
            raise ValueError("rouge1 needs at least one prediction")
        scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=use_stemmer)
        scores = [
            scorer.score(ref, pred)["rouge1"] for pred, ref in zip(predictions, references, strict=True)
        ]
        n = len(scores)
        return {
            "rouge1": sum(s.fmeasure for s in scores) / n,
            "rouge1_precision": sum(s.precision for s in scores) / n,
            "rouge1_recall": sum(s.recall for s in scores) / n,
        }
