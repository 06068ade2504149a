"""Cross-metric PCA and per-layer correlations of one run."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    import pandas as pd

    from ckptlens.analysis.correlation import correlation_matrix, layer_correlations, metric_correlations
    from ckptlens.analysis.notes import gap_notes
    from ckptlens.analysis.pca import pca_explained_variance
    from ckptlens.analysis.training_log import log_correlations
    from ckptlens.store.atomic import atomic_path, write_text

    table = pd.read_parquet(snakemake.input.table)
    gaps = gap_notes(pd.read_csv(snakemake.input.missing)) if "missing" in snakemake.input.keys() else []
    # what the run's source left out (final.pt beside numbered checkpoints, ...): the words of `ckptlens layers`
    gaps = list(snakemake.params.source_notes or []) + gaps
    explained, loadings, notes = pca_explained_variance(table)
    pairs = snakemake.params.pairs
    # the configured pairs per layer, else every pair of the layer-averaged metrics (bounded by the
    # number of metrics); every pair on every layer goes to a file of its own
    if pairs:
        corr, corr_notes = metric_correlations(table, [tuple(p) for p in pairs])
    else:
        corr, corr_notes = correlation_matrix(table)
    per_layer, layer_notes = layer_correlations(table)
    corr_notes += layer_notes
    # a run with a training log: every metric against its logged loss (and evaluation metrics)
    if "log" in snakemake.input.keys():
        log_summary, log_layers, log_notes = log_correlations(table, pd.read_csv(snakemake.input.log))
        corr = log_summary if corr.empty else pd.concat([corr, log_summary], ignore_index=True)
        per_layer = log_layers if per_layer.empty else pd.concat([per_layer, log_layers], ignore_index=True)
        corr_notes += log_notes
    for df, key in ((explained, "pca"), (loadings, "loadings"), (corr, "correlation"), (per_layer, "layers")):
        with atomic_path(snakemake.output[key]) as tmp:
            df.to_csv(tmp, index=False)
    write_text(snakemake.output.notes, "".join(f"{n}\n" for n in gaps + notes + corr_notes))
    for n in gaps + notes + corr_notes:
        print(n)
