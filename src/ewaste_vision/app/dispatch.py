"""From a batch of queued requests to one outcome per request.

The queue hands over up to `max_batch_size` requests at once. Each request's uploads are checked on
their own; the valid ones are grouped by model and each group goes to the task's runner in one
call, so the model sees one large batch. A request's problem never fails its neighbours: its
outcome carries the one-line message, and an unexpected failure of a group is retried request by
request so only the culprit reports it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ewaste_vision.app.catalog import RunEntry
from ewaste_vision.app.jobs import Job, Outcome, WorkArea, nothing_readable
from ewaste_vision.app.limits import ServeLimits
from ewaste_vision.app.security import user_message
from ewaste_vision.app.uploads import prepare_uploads
from ewaste_vision.errors import UserError

TaskRunner = Callable[[RunEntry, Sequence[Job]], list[Outcome]]
"""A task's batch function: one run, many jobs -> one outcome per job."""


class Dispatcher:
    """Runs batches of requests for the tasks of a catalog."""

    def __init__(
        self,
        catalog: Mapping[str, RunEntry],
        runners: Mapping[str, TaskRunner],
        limits: ServeLimits,
        work: WorkArea,
    ) -> None:
        """Args:
        catalog: the served runs by name.
        runners: {task name: batch function}.
        limits: upload bounds.
        work: where request folders are made.
        """
        self.catalog = catalog
        self.runners = runners
        self.limits = limits
        self.work = work

    def run(
        self,
        task: str,
        models: Sequence[str | None],
        files: Sequence[Sequence[str] | None],
        options: Sequence[dict[str, Any]] | None = None,
    ) -> list[Outcome]:
        """Outcomes of a batch of requests, in request order.

        Args:
            task: the task of the endpoint called.
            models: each request's model name.
            files: each request's uploaded file paths.
            options: each request's task options.
        """
        options = options or [{} for _ in models]
        outcomes: list[Outcome | None] = [None] * len(models)
        groups: dict[str, list[tuple[int, Job]]] = {}
        for index, (model, uploaded, extra) in enumerate(zip(models, files, options, strict=True)):
            name = str(model or "")
            entry = self.catalog.get(name)
            if entry is None or entry.task != task:
                known = ", ".join(e.name for e in self.catalog.values() if e.task == task) or "none"
                outcomes[index] = Outcome.failed(
                    f"no {task} model {name!r}; choose one of: {known}", name, task
                )
                continue
            folder = self.work.new_request()
            try:
                uploads = prepare_uploads(uploaded, folder / "in", self.limits)
            except UserError as exc:
                outcomes[index] = Outcome.failed(user_message(exc), name, task)
                continue
            job = Job(uploads, folder / "out", dict(extra))
            job.out.mkdir()
            if not uploads.files:
                outcomes[index] = nothing_readable(job, name, task)
                continue
            groups.setdefault(name, []).append((index, job))
        for name, members in groups.items():
            jobs = [job for _, job in members]
            try:
                results = self._run_group(task, name, jobs)
            finally:
                for job in jobs:
                    shutil.rmtree(job.uploads.folder, ignore_errors=True)
            for (index, _), outcome in zip(members, results, strict=True):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _run_group(self, task: str, name: str, jobs: list[Job]) -> list[Outcome]:
        skipped_before = [list(job.uploads.skipped) for job in jobs]
        try:
            return self.runners[task](self.catalog[name], jobs)
        except Exception as exc:  # shown as one line; the traceback goes to the server log
            for job, skipped in zip(jobs, skipped_before, strict=True):
                job.uploads.skipped = skipped
            if len(jobs) > 1:
                return [outcome for job in jobs for outcome in self._run_group(task, name, [job])]
            return [Outcome.failed(user_message(exc), name, task, jobs[0].uploads.skipped)]
