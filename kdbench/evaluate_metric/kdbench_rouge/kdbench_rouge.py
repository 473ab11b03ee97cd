"""Rouge-L and exact match exactly as the MiniLLM / DistiLLM / POCL lineage reports them.

Load it from its folder, no Hub access needed:

    evaluate.load("path/to/kdbench/evaluate_metric/kdbench_rouge")

evaluate copies this script into its module cache before importing it, so the ``kdbench``
package must be importable there (``pip install -e .`` in the project).
"""

import datasets
import evaluate

from kdbench.metrics import exact_match, lineage_metrics, rouge_l

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
@inproceedings{gu2024minillm,
    title = "{MiniLLM}: Knowledge Distillation of Large Language Models",
    author = "Gu, Yuxian and Dong, Li and Wei, Furu and Huang, Minlie",
    booktitle = "ICLR",
    year = "2024",
}
"""

_DESCRIPTION = """\
Rouge-L F-measure as computed by rouge_score's RougeScorer(['rougeL'], use_stemmer=True), best over
each example's references, averaged and scaled to 0-100 (MiniLLM's rouge_metric.compute_metrics),
plus the exact match it logs alongside. Per-example scores are bit-for-bit rouge_score's; the
computation is kdbench's cached, compiled implementation.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated strings.
    references: one reference string per prediction, or one list of reference strings per
        prediction (all examples of one call in the same form).
    return_per_example: also return `rougeL_per_example` and `exact_match_per_example`
        (0-100 per example). Default False.
    ndigits: rounding of the two means; 4 like the lineage's logs, None for none.
Returns:
    rougeL: 100 * mean over examples of the best Rouge-L F-measure.
    exact_match: 100 * share of examples equal to a reference after normalisation
        (lowercase, ASCII punctuation removed, whitespace collapsed).
Examples:
    >>> metric = evaluate.load("kdbench/evaluate_metric/kdbench_rouge")
    >>> metric.compute(predictions=["The cat sat."], references=[["the cat sat", "a dog"]])
    {'exact_match': 100.0, 'rougeL': 100.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KdbenchRouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Sequence(datasets.Value("string", id="sequence")),
                }),
                datasets.Features({
                    "predictions": datasets.Value("string", id="sequence"),
                    "references": datasets.Value("string", id="sequence"),
                }),
            ],
            codebase_urls=["https://github.com/microsoft/LMOps/tree/main/minillm"],
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, return_per_example=False, ndigits=4):
        result = lineage_metrics(predictions, references, ndigits=ndigits)
        if return_per_example:
            result["rougeL_per_example"] = rouge_l(predictions, references)
            result["exact_match_per_example"] = exact_match(predictions, references)
        return result
