"""Tasks: what differs between classify, multilabel and detect, and nothing else."""

from ewaste_vision.tasks.registry import Task, available_tasks, get_task, register_task

__all__ = ["Task", "available_tasks", "get_task", "register_task"]
