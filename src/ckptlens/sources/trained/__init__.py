"""The code of the models trained here (sources ``train_toy`` and ``train_mlp``, registered by
:mod:`ckptlens.sources.training`): seeded, deterministic on CPU, a checkpoint at each configured
step and a training log.

* the demo, a small attention-only transformer with rotary positions (:mod:`.transformer`) on an
  induction (copying) task (:mod:`.induction`);
* a two-output MLP on the two-forces task (:mod:`.mlp`), for gradient PCA;
* :mod:`.train` trains either (torch); :mod:`.configs` their settings and schemas.

Nothing is imported here: a training job's code (its import closure) is the training modules it
runs, not the source registry.
"""
