"""How an onnxruntime session uses the CPU: thread pools and whether they spin.

By default onnxruntime's pool threads spin-wait after each operator (``session.intra_op.allow_spinning``
and ``session.inter_op.allow_spinning`` are on) so the next operator starts without a wake-up.
That is right for a process that owns its cores. Where stages share them (``openlfr run``: detect,
embed, match and alert in turn on one thread; several services on one small box), the spinning
burns CPU while the other stage needs it, so spinning is off unless a setting turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from openlfr.inference.cpu_budget import default_intra_op_threads

if TYPE_CHECKING:
    import onnxruntime as ort

#: Most threads one pool may be given (a bound against typos such as 800 for 8).
MAX_THREADS = 256


@dataclass(frozen=True, slots=True)
class OrtThreading:
    """Thread pools of a stage's onnxruntime sessions.

    Attributes:
        intra_op_threads: threads inside one operator; 0 lets onnxruntime choose (one per
            physical core), except where the process may use fewer CPUs than the machine has (a
            container's CPU quota, an affinity mask): then that many
            (:func:`openlfr.inference.cpu_budget.default_intra_op_threads`).
        inter_op_threads: threads running independent operators at once; 0 lets onnxruntime
            choose. Above 1 the graph runs in parallel mode.
        allow_spinning: let idle pool threads spin-wait for the next operator (onnxruntime's
            default) instead of sleeping at once.
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_THREADS:
                raise ValueError(f"{name}={value}, expected 0..{MAX_THREADS} (0 = onnxruntime's default)")

    def session_options(self) -> ort.SessionOptions:
        """onnxruntime ``SessionOptions`` with these pools."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads or default_intra_op_threads()
        options.inter_op_num_threads = self.inter_op_threads
        if self.inter_op_threads > 1:
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        spin = "1" if self.allow_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        return options

    def describe(self) -> str:
        """``intra_op_threads=.. inter_op_threads=.. allow_spinning=..`` for log lines."""
        return (f"intra_op_threads={self.intra_op_threads} inter_op_threads={self.inter_op_threads} "
                f"allow_spinning={int(self.allow_spinning)}")
