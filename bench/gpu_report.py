"""The Markdown page of a `bench/gpu_check.py` run, from the same dict its JSON file holds."""

from __future__ import annotations

QUICK_NOTE = (
    "**Quick mode**: tiny shapes and a few steps, to check that every code path runs; its figures say "
    "nothing about speed (overheads dominate), and its projection is not one."
)


def _f(value, spec: str = ".2f", suffix: str = "") -> str:
    """`value` formatted, or `-` when a section did not measure it."""
    if value is None:
        return "-"
    return f"{value:{spec}}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def render_markdown(report: dict) -> str:
    """Every section's status, then its figures; a section that failed shows its error instead."""
    results = report["results"]
    env = results.get("environment", {})
    machine = env.get("gpu") or f"CPU ({env.get('cpu_count', '?')} cores)"
    lines = [
        f"# GPU check: {machine}",
        "",
        f"`{report['command']}`, {report['started_utc']} UTC, {report['mode']} mode, device `{report['device']}`, "
        f"bf16 autocast {'on' if report['bf16'] else 'off'}, torch {env.get('torch', '?')} (CUDA {env.get('cuda')}), "
        f"commit {env.get('commit') or '?'}, total {_f(report.get('total_s'), '.0f', ' s')} "
        f"(budget {report['budget_s']:.0f} s).",
        "",
        f"Texts: {report.get('data', '-')}. Wheels added: {', '.join(report['wheels']) or 'none'}.",
        *(["", QUICK_NOTE] if report["mode"] == "quick" else []),
        "",
        *_table(
            ["section", "status", "seconds", "note"],
            [
                [n, s["status"], _f(s["seconds"], ".1f"), s.get("error", "")]
                for n, s in report["sections"].items()
            ],
        ),
    ]
    for title, render in SECTIONS:
        name = render.__name__.removeprefix("_")
        if results.get(name):
            try:
                body = render(results[name])
            except (KeyError, TypeError, ValueError) as error:  # a section cut short mid-way: the JSON has it
                body = [
                    f"(partial figures, not rendered: {type(error).__name__}: {error}; see the JSON file)"
                ]
            lines += ["", f"## {title}", "", *body]
    return "\n".join(lines)


def _environment(r: dict) -> list[str]:
    rows = [[k, f"`{v}`"] for k, v in r.get("packages", {}).items()]
    device = (
        [
            f"{r['gpu']}, {r['gpu_memory_gib']} GiB, compute capability {r['capability']}, "
            f"{r['multiprocessors']} SMs, native bf16 {r['bf16_native']}",
            "",
        ]
        if "gpu" in r
        else []
    )
    return [
        *device,
        f"Python {r.get('python')}, transformers {r.get('transformers')}, peft {r.get('peft')}.",
        "",
        *_table(["optional package", "state"], rows),
    ]


def _matmul(r: dict) -> list[str]:
    return [
        f"{r['n']} x {r['n']} x {r['n']} {r['dtype']} matmul: **{_f(r.get('tflops'), '.3g')} TFLOP/s** "
        "(the yardstick of the share column below)."
    ]


def _shape(shape: dict) -> str:
    """`T5 shape d_model 512, d_ff 2048, 6+6 layers` (T5-small's; T5-base's is 768, 3072, 12+12)."""
    return (
        f"T5 shape d_model {shape.get('d_model')}, d_ff {shape.get('d_ff')}, "
        f"{shape.get('num_layers')}+{shape.get('num_layers')} layers, vocab {shape.get('vocab_size')}"
    )


def _loop(r: dict) -> list[str]:
    rows = [
        [
            m,
            _f(x["study_examples_per_s"], ".1f"),
            _f(x["plain_examples_per_s"], ".1f"),
            f"**{_f(x['ratio'])}x**",
            ", ".join(f"{v:.2f}" for v in x["ratios"]),
            _f(x["study_tokens_per_s"], ",.0f"),
            _f(x["tflops"], ".3g"),
            _f(100 * x["matmul_share"] if x["matmul_share"] is not None else None, ".1f", "%"),
            _f(x["peak_memory_mb"], ",.0f"),
            _f(x.get("overhead_ms_per_step"), ".1f"),
        ]
        for m, x in r.get("methods", {}).items()
    ]
    return [
        f"{_shape(r.get('shape', {}))}, {r.get('examples')} examples per timed epoch "
        f"({r.get('real_tokens'):,} real / {r.get('padded_tokens'):,} "
        f"padded tokens), bf16 autocast {r.get('bf16_autocast')}; the ratio is the median over the repeats.",
        "",
        *_table(
            [
                "method",
                "study loop ex/s",
                "plain loop ex/s",
                "ratio (>= 0.95x)",
                "each repeat",
                "tokens/s",
                "TFLOP/s",
                "share of matmul rate",
                "peak MiB",
                "loop overhead ms / step",
            ],
            rows,
        ),
    ]


def _generation(r: dict) -> list[str]:
    return [
        f"{r['examples']} inputs, {r['new_tokens']} new tokens each (EOS held back), batches of "
        f"{r['batch_size']}: batched **{_f(r['batched_examples_per_s'], '.1f')} ex/s**, one at a time "
        f"({r['singles']} inputs) {_f(r['single_examples_per_s'], '.2f')} ex/s: **{_f(r['speedup'], '.1f')}x** "
        "(target >= 10x); the study generates in fp32."
        + (
            f" Batched under bf16 autocast: {_f(r['batched_bf16_examples_per_s'], '.1f')} ex/s."
            if "batched_bf16_examples_per_s" in r
            else ""
        )
    ]


def _gpu_tests(r: dict) -> list[str]:
    rows = [[t["test"], t["outcome"], t.get("message", "")] for t in r.get("tests", [])]
    return [f"`{r.get('command')}`: {r.get('summary')}", "", *_table(["test", "outcome", "message"], rows)]


def _qlora(r: dict) -> list[str]:
    rows = [
        [
            label,
            _f(x["examples_per_s"], ".1f"),
            _f(x["peak_memory_mb"], ",.0f"),
            f"{x['trainable_parameters']:,} / {x['parameters']:,}",
        ]
        for label, x in r.get("runs", {}).items()
    ]
    return [
        f"{_shape(r.get('shape', {}))}, {r.get('examples')} examples per timed epoch, the study loop. The float "
        "base is the study's lora: fp32 weights, under bf16 autocast on a GPU.",
        "",
        *_table(["base", "ex/s", "peak MiB", "trainable / all parameters"], rows),
    ]


def _sharing(r: dict) -> list[str]:
    together = ", ".join(f"{s:.1f}" for s in r.get("together_s", []))
    return [
        f"{r.get('trials')} {r.get('preset')} {r.get('method')} trials, one process each, on one device: "
        f"alone {_f(r.get('alone_s'), '.1f', ' s')}; together {together} s, all done in "
        f"{_f(r.get('makespan_s'), '.1f', ' s')}: each trial {_f(r.get('slowdown_per_trial'))}x slower, "
        f"**{_f(r.get('throughput_gain'))}x** the throughput of one at a time. "
        f"Peak MiB per trial: {r.get('peak_memory_mb') or '-'}."
    ]


def _projection(r: dict) -> list[str]:
    rows = [
        [
            m,
            _f(x["examples_per_s"], ".1f"),
            _f(x["s_per_epoch_full_train"], ".0f"),
            _f(x["trial_train_s"], ".0f"),
            _f(x["trial_eval_s"], ".0f"),
            _f(x.get("stage1_s"), ".0f"),
            f"**{_f(x['gpu_hours_50_trials'], '.2f')}**",
        ]
        for m, x in r.get("methods", {}).items()
    ]
    return [
        f"Paper preset: {r.get('epochs')} epochs over {r.get('train_examples'):,} examples, batch 16, 256 "
        f"tokens; evaluation {r.get('eval_note')} (an upper bound). No early stopping counted: ASHA makes a "
        "search cheaper. qlora's evaluation is T5-small's scaled by the train-speed ratio of the two shapes."
        + (
            f" Generating under bf16 autocast, T5-small's evaluation would take "
            f"{_f(r['eval_s_per_trial_bf16'], '.0f')} s per trial instead of {_f(r['eval_s_per_trial'], '.0f')}."
            if "eval_s_per_trial_bf16" in r
            else ""
        ),
        "",
        *_table(
            [
                "method",
                "ex/s",
                "s / epoch (7,473)",
                "train s / trial",
                "eval s / trial",
                "stage 1 s (once)",
                "GPU-hours, 50 trials",
            ],
            rows,
        ),
    ]


SECTIONS = [
    ("Environment", _environment),
    ("Matmul rate", _matmul),
    ("Study loop against a plain PyTorch + PEFT loop", _loop),
    ("Generation", _generation),
    ("gpu-marked tests", _gpu_tests),
    ("QLoRA against LoRA", _qlora),
    ("Fractional sharing", _sharing),
    ("Projected paper-preset cost", _projection),
]
