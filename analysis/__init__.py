"""Results -> report: read Ray Tune result folders, choose each group's best trial by a dev metric, and write
the study's tables, charts and trial pages.

    python -m analysis.report results/slm-tiny --out report/        # report.md, report.html, tables/, figures/
    python -m analysis.notebook results/slm-tiny --out report/report.ipynb

Modules: `load` (folders -> DataFrames), `select` (best trial per group), `tables` / `table` (the study's
tables), `plots` (charts), `diagnostics` (search history, importance), `render` (Markdown / HTML / LaTeX),
`report` (the command), `notebook` (the parameterised notebook), `published` (the study's own numbers).
"""
