"""Safe defaults of `ewaste serve` that need no server: binding, logins, messages, uploads."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ewaste_vision.app.limits import ServeLimits
from ewaste_vision.app.security import (
    INTERNAL_ERROR,
    bind_warning,
    is_loopback,
    parse_credentials,
    read_auth_file,
    strip_paths,
    user_message,
)
from ewaste_vision.app.summaries import SUMMARIES
from ewaste_vision.app.uploads import UploadError, pixel_count, prepare_uploads, safe_name
from ewaste_vision.cli import build_parser
from ewaste_vision.errors import UserError


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"])
def test_loopback_addresses_need_no_password(host: str):
    assert is_loopback(host) and bind_warning(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_other_addresses_warn_unless_a_login_is_required(host: str):
    warning = bind_warning(host, None)
    assert warning is not None and host in warning and "--auth" in warning
    assert bind_warning(host, [("ana", "s3cret")]) is None


def test_serve_binds_loopback_by_default_and_takes_one_kind_of_login():
    args = build_parser().parse_args(["serve", "runs/a", "runs/b"])
    assert args.host == "127.0.0.1" and args.runs == [Path("runs/a"), Path("runs/b")]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "r", "--auth", "a:b", "--auth-file", "f"])


def test_credentials_are_parsed_from_flags_and_files(tmp_path: Path):
    assert parse_credentials("ana:pa:ss") == ("ana", "pa:ss")
    with pytest.raises(UserError, match="user:password"):
        parse_credentials("ana")
    file = tmp_path / "users"
    file.write_text("# team\nana:one\n\nbo:two\n")
    assert read_auth_file(file) == [("ana", "one"), ("bo", "two")]
    file.write_text("ana:\n")
    with pytest.raises(UserError, match="line 1"):
        read_auth_file(file)


def test_messages_show_file_names_never_server_folders_or_tracebacks():
    assert strip_paths("/srv/runs/a/model.pt: corrupt") == "model.pt: corrupt"
    assert (
        strip_paths("cannot identify image file '/tmp/gradio/ab12/x.png'")
        == "cannot identify image file 'x.png'"
    )
    assert user_message(UserError("/home/me/run: no model.pt here\nsecond line")) == "run: no model.pt here"
    assert user_message(RuntimeError("/opt/secret/code.py line 3")) == INTERNAL_ERROR


def test_uploads_get_safe_names_and_keep_their_bytes(tmp_path: Path):
    assert safe_name("../../etc/passwd") == "etc_passwd" and safe_name("...") == "file"
    scan = tmp_path / "in" / "scan.high.png"
    scan.parent.mkdir()
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(scan)
    uploads = prepare_uploads([scan], tmp_path / "request", ServeLimits())
    (copy,) = uploads.files
    assert copy.name == "scan.high.png" and copy.read_bytes() == scan.read_bytes()  # 16 bits intact


def test_no_upload_and_too_many_images_are_refused(tmp_path: Path):
    with pytest.raises(UploadError, match="no files"):
        prepare_uploads([], tmp_path / "a", ServeLimits())
    images = []
    for number in range(3):
        images.append(tmp_path / f"{number}.png")
        Image.new("RGB", (4, 4)).save(images[-1])
    with pytest.raises(UploadError, match="more than 2 images"):
        prepare_uploads(images, tmp_path / "b", ServeLimits(max_files=2))


def test_zip_members_are_bounded_in_size_and_cannot_lie_about_it(tmp_path: Path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("zeros.png", bytes(2_000_000))
    with pytest.raises(UploadError, match="exceed"):
        prepare_uploads([archive], tmp_path / "a", ServeLimits(max_zip_bytes=1_000_000))
    skipped = prepare_uploads([archive], tmp_path / "b", ServeLimits(max_file_bytes=1_000_000))
    assert not skipped.files and "larger than" in skipped.skipped[0]["reason"]


def test_pixel_counts_come_from_headers(tmp_path: Path):
    image = tmp_path / "wide.png"
    Image.new("RGB", (300, 20)).save(image)
    array = tmp_path / "pair.npy"
    np.save(array, np.zeros((2, 30, 40), dtype=np.uint16))
    assert pixel_count(image) == 6000 and pixel_count(array) == 1200
    (tmp_path / "junk.png").write_text("junk")
    assert pixel_count(tmp_path / "junk.png") is None


def test_summaries_show_errors_and_tables():
    for summarise in SUMMARIES.values():
        assert summarise(None) == ("", [], [])
        text, _, rows = summarise({"error": "no usable image (a.txt: not an image file)"})
        assert "a.txt" in text and not rows
    result = {
        "model": "m",
        "price_table": {"currency": "EUR", "date": "2023-04"},
        "images": [
            {
                "file": "b.jpg",
                "detections": [{}],
                "counts": {"ic": 1},
                "value": {"detected": 1.5, "expected": 1.6, "low": 1.0, "high": 2.0, "confidence": 0.9},
            }
        ],
        "lot": None,
        "skipped": [{"file": "c.jpg", "reason": "unreadable"}],
    }
    text, _, rows = SUMMARIES["detect"](result)
    assert "1.50 EUR" in text and "2023-04" in text and "c.jpg: unreadable" in text
    assert rows == [["b.jpg", 1, "1.50", "1.60 (1.00 to 2.00)", "ic 1"]]
