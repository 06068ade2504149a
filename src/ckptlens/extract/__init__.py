"""Extraction: from a checkpoint to the per-layer tensors metrics read, only what the enabled
metrics need.

* weights (:mod:`.weights`): selected weight matrices and per-head circuits, numpy only;
* activations, weight gradients and activation gradients (:mod:`.model`): one model built per
  series of checkpoints, its weights swapped per checkpoint, run on fixed probe batches; weight
  gradients streamed one backward at a time into their sufficient statistics (:mod:`.gradients`,
  the ``gradient_stats`` kind) and raw only where a family needs them; hook capture in
  :mod:`.capture`, the same for every model — the models trained here
  (:mod:`.trained_model`) and Hugging Face ``transformers`` models (:mod:`.hf_model`), the
  families of :data:`.model.MODEL_FAMILIES`, each giving a :class:`.probed.ProbedModel`.

Importing :mod:`.weights` or :mod:`.model` does not import torch; running a model does.
"""
