"""What every stage shares: atomic writes, tensor files, failure records, tidy tables, layer
names and their order, module-name patterns, job logs, code hashes and the results layout
(:mod:`.layout`: every path a run writes).

The first layer of the library: it imports nothing else from ckptlens, and only the standard
library, numpy and safetensors at import time (pandas and torch where a function needs them).
"""
