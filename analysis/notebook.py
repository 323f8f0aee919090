"""Run the report notebook with parameters, as papermill would: patch its `parameters` cell, execute it.

    python -m analysis.notebook results/slm-tiny --out report/report.ipynb

The executed copy keeps every table and chart as cell outputs; the report files go next to it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).parent / "notebooks" / "report.ipynb"
PARAMETERS = ("results_dirs", "metric", "mode", "out_dir")


def with_parameters(notebook: Any, parameters: Mapping[str, Any]) -> Any:
    """`notebook` with its cell tagged `parameters` set to `parameters` (Python literals).

    Raises:
        ValueError: for an unknown parameter, or a notebook without a `parameters` cell.
    """
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown notebook parameter(s) {', '.join(unknown)}; known: {', '.join(PARAMETERS)}"
        )
    cells = [c for c in notebook.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"the notebook needs exactly one cell tagged 'parameters', found {len(cells)}")
    lines = [line for line in cells[0].source.splitlines() if line.split("=")[0].strip() not in parameters]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cells[0].source = "\n".join(lines)
    return notebook


def run_notebook(
    parameters: Mapping[str, Any], output: str | Path, *, timeout_s: int = 600, kernel_name: str = "python3"
) -> Any:
    """Execute the report notebook with `parameters` and save the executed copy at `output`.

    Raises:
        ValueError: for bad parameters.
        nbclient.exceptions.CellExecutionError: when a cell fails (its traceback is in the message).
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4), parameters)
    from study.outputs import check_output_file, write_atomically

    check_output_file("--out", Path(output).expanduser())
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel starts in the output's folder, so a relative results path means the same in and out.
    client = NotebookClient(
        notebook,
        timeout=timeout_s,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(output.parent)}},
    )
    try:
        client.execute()
    finally:
        # a failed run is saved too: its error shows in the failing cell
        text = nbformat.writes(notebook)
        write_atomically({output: text if text.endswith("\n") else text + "\n"}, flag="--out")
    return notebook


def main(argv: list[str] | None = None) -> None:
    """`python -m analysis.notebook RESULTS... --out FILE.ipynb`: bad input exits 2 with one line."""
    from study.errors import run_cli
    from study.outputs import check_output_file

    parser = argparse.ArgumentParser(prog="python -m analysis.notebook", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results folders or storage URIs")
    parser.add_argument(
        "--out", required=True, help="the executed notebook (.ipynb); report files go beside it"
    )
    parser.add_argument(
        "--metric", default="dev/accuracy", help="dev metric that picks each group's best trial"
    )
    parser.add_argument(
        "--mode", default="max", choices=("max", "min"), help="whether the metric is maximised"
    )
    args = parser.parse_args(argv)
    results = [str(Path(r).resolve()) if "://" not in r else r for r in args.results]
    out_dir = str(Path(args.out).resolve().parent)
    parameters = {"results_dirs": results, "metric": args.metric, "mode": args.mode, "out_dir": out_dir}

    def run() -> None:
        from analysis.load import load_results

        check_output_file("--out", Path(args.out))
        load_results(results)  # bad input fails here with one line, not inside the kernel
        run_notebook(parameters, args.out)
        print(f"wrote {args.out} and the report files in {out_dir}")

    run_cli(run)


if __name__ == "__main__":
    main()
