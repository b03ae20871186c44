"""Where generation and all other device work run: the executor room.

`InProcessExecutor` is the embedded default: one worker thread owns the engine, batches the
images of concurrent requests (`batch_key` says which may share a pipeline call) and runs any
other device work between batches. `EngineLike` is what it needs of an engine;
`default_engine_factory` builds the real one.
"""

from kiln.executor.batching import batch_key
from kiln.executor.engine import EngineLike, default_engine_factory
from kiln.executor.in_process import InProcessExecutor
from kiln.executor.metrics import ExecutorMetrics

__all__ = ["EngineLike", "ExecutorMetrics", "InProcessExecutor", "batch_key", "default_engine_factory"]
