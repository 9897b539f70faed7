"""Numbers several layers share, in one place: the latency harness's floors and the INT8 accuracy budget.

The configuration's bench and export sections take their defaults from here (``edgepipe.config.BENCH_DEFAULTS``
and ``EXPORT_DEFAULTS`` are those sections at these values); the harness and the report, which sit below the
configuration, read them here.
"""

#: warm-up calls before timing: at least this many, and for at least WARMUP_S seconds (as trtexec warms up by time)
WARMUP_CALLS = 10
WARMUP_S = 0.2
#: timed calls: at least this many, and for at least MIN_DURATION_S seconds
MIN_ITERATIONS = 50
MIN_DURATION_S = 1.0
#: most top-1 percentage points an INT8 artifact may lose against FP32 before other recipes are tried
ACCURACY_BUDGET_PP = 1.0
