"""A fetched run's training history (a Hugging Face Trainer's trainer_state.json, or a Lightning
CSVLogger's metrics.csv) -> its train_log.csv, the training log a trained run writes: step, loss,
learning_rate, eval_* ..."""

from ckptlens.store.joblog import job_log

with job_log(snakemake.log[0]):
    from ckptlens.sources.lightning_log import lightning_csv_log
    from ckptlens.sources.trainer_state import trainer_state_log
    from ckptlens.store.atomic import atomic_path

    read = lightning_csv_log if snakemake.input[0].endswith(".csv") else trainer_state_log
    log = read(snakemake.input[0])
    with atomic_path(snakemake.output[0]) as tmp:
        log.to_csv(tmp, index=False)
    print(f"{snakemake.input[0]}: {len(log)} logged steps, columns {', '.join(log.columns)}")
