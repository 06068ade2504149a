"""The report's landing page: every run, the headline figures, the strongest correlations and the
convergence table (ckptlens.plots.tables.study_page); and the explorer of every run side by side."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from pathlib import Path

    import pandas as pd

    from ckptlens.plots.explorer import explorer_html, write_explorer
    from ckptlens.plots.tables import study_fragment, study_page, write_page

    def read_csv(path):
        try:
            return pd.read_csv(path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    runs, figures = [], []
    for i, run in enumerate(snakemake.params.runs):
        runs.append(
            {
                "run": run,
                "table": pd.read_parquet(snakemake.input.tables[i]),
                "correlation": read_csv(snakemake.input.correlation[i]),
                "dynamics": read_csv(snakemake.input.dynamics[i]),
            }
        )
        trajectories = sorted(Path(snakemake.input.trajectories[i]).glob("*.png"))
        figures += [(f"{run}: {p.stem.removeprefix('trajectory_')}", str(p)) for p in trajectories[:1]]
        figures.append((f"{run}: correlation", snakemake.input.correlation_plots[i]))
    write_page(study_page(snakemake.params.study, runs, figures), snakemake.output.page)
    write_page(study_fragment(snakemake.params.study, runs, figures), snakemake.output.landing)
    logs = {run: pd.read_csv(path) for run, path in zip(snakemake.params.logged, snakemake.input.train_logs)}
    table = pd.concat([r["table"] for r in runs], ignore_index=True)
    dynamics = (
        pd.concat([r["dynamics"] for r in runs if len(r["dynamics"])], ignore_index=True)
        if any(len(r["dynamics"]) for r in runs)
        else None
    )
    title = f"ckptlens explorer — {snakemake.params.study} ({len(runs)} runs)"
    write_explorer(explorer_html(table, dynamics, logs, title=title), snakemake.output.explorer)
