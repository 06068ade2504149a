"""Task vectors across runs that share a base checkpoint (fine-tuning seeds): their PCA per layer
(:mod:`.pca`), new weights drawn from the principal components (:mod:`.sampling`), and how those
weights do on a task (:mod:`.evaluate`)."""
