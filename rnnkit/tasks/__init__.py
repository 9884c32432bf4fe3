"""The synthetic benchmark tasks of the RNN papers, each with its paper's definition,
baseline and success criterion, and a small loop to train any cell on them."""

from .adding import AddingProblem, HochreiterAdding
from .base import Batch, Evaluation, Task, TaskModel
from .copying import CopyingMemory
from .loop import LoopConfig, LoopResult, train_loop
from .reber import EmbeddedReber
from .run import TaskRunConfig, TaskRunResult, make_task, run_task
from .seq2seq_train import Seq2SeqTrainConfig, train_seq2seq  # (registers the "seq2seq" run directories)
from .temporal_order import TemporalOrder

#: tasks by the name the CLI uses (``rnnkit task NAME``)
TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (AddingProblem, HochreiterAdding, CopyingMemory, TemporalOrder, EmbeddedReber)
}

__all__ = [
    "TASKS", "AddingProblem", "Batch", "CopyingMemory", "EmbeddedReber", "Evaluation", "HochreiterAdding",
    "LoopConfig", "LoopResult", "Seq2SeqTrainConfig", "Task", "TaskModel", "TaskRunConfig", "TaskRunResult",
    "TemporalOrder", "make_task", "run_task", "train_loop", "train_seq2seq",
]
