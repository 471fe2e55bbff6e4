"""Tasks: what differs between classify, multilabel and detect, and nothing else."""

from ewaste_vision.tasks.registry import (
    LabelTask,
    Task,
    available_tasks,
    get_label_task,
    get_task,
    register_task,
)

__all__ = ["LabelTask", "Task", "available_tasks", "get_label_task", "get_task", "register_task"]
