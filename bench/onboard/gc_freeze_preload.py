"""A fork-server preload for quantizer_memory.py's `forkserver-freeze` variant (an experiment, not the worker's
behaviour): imported last, it moves every object the preload made into the garbage collector's permanent
generation (gc.freeze), so a forked child's collections do not write to (and so copy) the pages it shares."""

import gc
import sys

gc.collect()
gc.freeze()
print(f"gc_freeze_preload: froze {gc.get_freeze_count()} objects in pid", __import__("os").getpid(), file=sys.stderr)
