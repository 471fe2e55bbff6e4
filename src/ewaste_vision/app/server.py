"""`ewaste serve RUN...`: build the app over run directories and launch it with safe settings.

Safe by default: it listens on 127.0.0.1; another address without a password prints a warning;
share links are never made; uploads are bounded in bytes (while they stream in), pixels and zip
contents; error text shown in the page is one line without server paths (`show_error` stays off,
tracebacks go to the server log only).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr

from ewaste_vision.app.boards import boards_jobs
from ewaste_vision.app.catalog import RunEntry, load_catalog
from ewaste_vision.app.components import components_jobs
from ewaste_vision.app.dispatch import Dispatcher, TaskRunner
from ewaste_vision.app.jobs import WorkArea
from ewaste_vision.app.limits import ServeLimits
from ewaste_vision.app.page import build_page
from ewaste_vision.app.pairs import fusion_jobs
from ewaste_vision.app.probabilities import classify_jobs
from ewaste_vision.app.security import Credentials, bind_warning, parse_credentials, read_auth_file
from ewaste_vision.value import load_price_table

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


@dataclass
class ServedApp:
    """A built app with what it needs at launch and at shutdown."""

    page: gr.Blocks
    dispatcher: Dispatcher
    """Runs the batched requests (benches wrap it to count batch sizes)."""
    work: WorkArea

    @property
    def catalog(self) -> Mapping[str, RunEntry]:
        """The served runs by name."""
        return self.dispatcher.catalog

    @property
    def limits(self) -> ServeLimits:
        """The upload bounds."""
        return self.dispatcher.limits

    def launch(
        self,
        host: str = DEFAULT_HOST,
        port: int | None = DEFAULT_PORT,
        auth: list[Credentials] | None = None,
        block: bool = True,
        quiet: bool = False,
    ) -> str:
        """Queue and start the server; returns its local URL.

        Args:
            host: address to bind (127.0.0.1 unless told otherwise).
            port: TCP port; None lets Gradio pick a free one from 7860 up.
            auth: accepted (user, password) pairs; None for no login.
            block: serve until interrupted; False returns once the server is up (tests, benches).
            quiet: print nothing on start.
        """
        warning = bind_warning(host, auth)
        if warning:
            print(warning, file=sys.stderr)
        self.page.queue(max_size=self.limits.max_queue, default_concurrency_limit=1)
        _, url, _ = self.page.launch(
            server_name=host,
            server_port=port,
            share=False,
            auth=auth or None,
            show_error=False,
            max_file_size=self.limits.max_file_bytes,
            prevent_thread_lock=not block,
            quiet=quiet,
            allowed_paths=[],
            blocked_paths=[str(entry.run_dir.resolve()) for entry in self.catalog.values()],
            ssr_mode=False,
            mcp_server=False,
            pwa=False,
            enable_monitoring=False,
        )
        return str(url)

    def close(self) -> None:
        """Stop the server and delete the request folders."""
        self.page.close()
        self.work.close()


def create_app(
    run_dirs: Sequence[Path | str],
    limits: ServeLimits | None = None,
    prices: Path | str | None = None,
) -> ServedApp:
    """Build the page over run directories of any task.

    Args:
        run_dirs: runs made by `ewaste train` (classify, multilabel or detect).
        limits: upload bounds; the defaults of `ServeLimits` when None.
        prices: price table YAML for detect runs (default: the packaged table).

    Raises:
        UserError: a run directory is missing or has no usable model, or the price table is bad.
    """
    limits = limits or ServeLimits()
    catalog = load_catalog(run_dirs)
    table = load_price_table(prices)
    runners: dict[str, TaskRunner] = {
        "classify": classify_jobs,
        "multilabel": components_jobs,
        "detect": partial(boards_jobs, table=table),
        "fuse": fusion_jobs,
    }
    work = WorkArea(ttl_s=limits.result_ttl_s)
    dispatcher = Dispatcher(catalog, runners, limits, work)
    return ServedApp(build_page(dispatcher, table), dispatcher, work)


def serve(
    run_dirs: Sequence[Path | str],
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    auth: str | None = None,
    auth_file: Path | str | None = None,
    limits: ServeLimits | None = None,
) -> None:
    """Serve the app until interrupted (behind `ewaste serve`).

    Args:
        run_dirs: run directories to offer.
        host: address to bind.
        port: TCP port.
        auth: `user:password` (visible to other local users in the process list; prefer a file).
        auth_file: a file of `user:password` lines.
        limits: upload bounds.
    """
    credentials = read_auth_file(auth_file) if auth_file else None
    if auth:
        credentials = [*(credentials or []), parse_credentials(auth)]
    app = create_app(run_dirs, limits)
    # `kill` (SIGTERM) stops the server like Ctrl-C does, so the request folders are removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {len(app.catalog)} model(s) on http://{host}:{port} (Ctrl-C to stop)", file=sys.stderr)
    try:
        app.launch(host, port, credentials, block=True, quiet=True)
    finally:
        app.close()
