"""The embedded demo: a small attention-only transformer trained on an induction (copying) task."""
