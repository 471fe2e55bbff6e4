"""What one request to the web app may hold: the bounds that keep a public server safe to run."""

from __future__ import annotations

from dataclasses import dataclass

MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on uploads, checked before any image is decoded."""

    max_file_bytes: int = 100 * MEGABYTE
    """Largest single upload (Gradio's `max_file_size`, enforced while the upload streams in)."""
    max_pixels: int = 50_000_000
    """Largest image accepted, in pixels (a 12 MP phone photo is 4x smaller); bigger ones are refused."""
    max_files: int = 200
    """Images per request, counting the members of zips."""
    max_zip_members: int = 500
    """Entries a zip may list; more is refused before anything is extracted."""
    max_zip_bytes: int = 500 * MEGABYTE
    """Total uncompressed size of a zip's images; extraction stops when it is exceeded."""
    max_batch_size: int = 16
    """Requests the queue merges into one model call (Gradio `max_batch_size`)."""
    max_queue: int = 64
    """Requests waiting in the queue; more are turned away with a 'queue full' message."""
    result_ttl_s: int = 3600
    """Seconds results (images, CSV files) stay available for download."""

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_pixels", "max_files", "max_zip_members", "max_zip_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.max_batch_size <= 256:
            raise ValueError(f"max_batch_size must be in [1, 256], got {self.max_batch_size}")

    def describe(self) -> str:
        """One line for the page: what a user may upload."""
        return (
            f"Up to {self.max_files} images per request, each at most {self.max_file_bytes // MEGABYTE} MB "
            f"and {self.max_pixels / 1e6:.0f} megapixels; zips of at most {self.max_zip_members} files."
        )
