"""Web app and HTTP API over trained runs (`ewaste serve`); it calls the public API only.

limits       what one request may upload (bytes, pixels, zip members)
security     bind address and password checks, messages without server paths
uploads      uploads -> checked image files in a private folder (zips unpacked safely)
catalog      the served runs, described by their own metadata
jobs         one request's work and result; metadata-free images and CSV tables
probabilities, components, boards
             the classify, multilabel (with heatmaps) and detect (with value) runners
dispatch     a queued batch of requests -> one outcome per request
summaries    a result as the page shows it
page         the Gradio page and its endpoints
server       build and launch with safe settings
browser      Debian's headless Chromium for browser tests and screenshots (Playwright)

Gradio is imported only by `page` and `server`, so the rest works (and is tested) without it.
"""

from ewaste_vision.app.limits import ServeLimits
from ewaste_vision.app.security import bind_warning, is_loopback

__all__ = ["ServeLimits", "bind_warning", "create_app", "is_loopback", "serve"]


def __getattr__(name: str) -> object:
    # `create_app` and `serve` import Gradio; only pay for it when they are used.
    if name in ("create_app", "serve", "ServedApp"):
        from ewaste_vision.app import server

        return getattr(server, name)
    raise AttributeError(name)
