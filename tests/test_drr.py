"""The projector against phantoms whose line integrals are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ewaste_vision.ct.drr import Detector, Pose, line_integrals, rotation_matrix
from ewaste_vision.ct.transfer import apply_transfer, check_control_points, jitter_control_points

METHODS = ("slices", "rays")


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sphere(size: int, radius_vox: float, mu: float) -> np.ndarray:
    """A uniform ball in the middle of a cube, its surface anti-aliased over one voxel."""
    axis = np.arange(size) - (size - 1) / 2
    zz, yy, xx = np.meshgrid(axis, axis, axis, indexing="ij")
    distance = np.sqrt(zz**2 + yy**2 + xx**2)
    return (np.clip(radius_vox - distance + 0.5, 0.0, 1.0) * mu).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_sphere_matches_chord_lengths_of_a_cone_beam(method):
    # A ray passing the centre at distance d crosses the ball along 2 * sqrt(r^2 - d^2).
    radius, mu, spacing = 15.0, 0.02, 0.5  # voxels, 1/mm, mm
    sid, sdd, pixel = 400.0, 700.0, 0.9
    pose = Pose(source_to_isocentre_mm=sid, source_to_detector_mm=sdd)
    image = line_integrals(
        torch.from_numpy(sphere(48, radius, mu)), (spacing,) * 3, [pose], Detector(32, 32, pixel), method
    )[0].numpy()

    u = (np.arange(32) - 15.5) * pixel
    cols, rows = np.meshgrid(u, u)
    rho = np.hypot(cols, rows)  # distance from the detector centre
    d = sid * rho / np.sqrt(rho**2 + sdd**2)  # the ray's distance from the ball's centre
    r_mm = radius * spacing
    expected = 2 * mu * np.sqrt(np.clip(r_mm**2 - d**2, 0.0, None))
    inside = d < r_mm - 2 * spacing  # away from the voxelised rim
    assert inside.sum() > 200
    np.testing.assert_allclose(image[inside], expected[inside], rtol=0.02)
    assert image[d > r_mm + spacing].max() < 1e-4  # rays that miss the ball see nothing


@pytest.mark.parametrize("method", METHODS)
def test_spacing_is_honoured_along_every_axis(method):
    # A box of 6 x 10 x 14 voxels with spacing (2.0, 0.5, 1.0) mm is 12 x 5 x 14 mm along (D, H, W).
    volume = np.zeros((16, 24, 24), np.float32)
    volume[5:11, 7:17, 5:19] = 0.1
    spacing = (2.0, 0.5, 1.0)
    detector = Detector(9, 9, 0.05)  # a small patch around the central ray
    poses = [
        Pose(rotation_deg=(0, 0, 0), source_to_isocentre_mm=2000, source_to_detector_mm=4000),
        Pose(rotation_deg=(0, 90, 0), source_to_isocentre_mm=2000, source_to_detector_mm=4000),
        Pose(rotation_deg=(0, 0, 90), source_to_isocentre_mm=2000, source_to_detector_mm=4000),
    ]
    centre = line_integrals(torch.from_numpy(volume), spacing, poses, detector, method)[:, 4, 4].numpy()
    # No turn: the beam runs along D (12 mm); 90 degrees about y: along W (14 mm); about x: H (5 mm).
    np.testing.assert_allclose(centre, [0.1 * 12, 0.1 * 14, 0.1 * 5], rtol=0.01)


@pytest.mark.parametrize("method", METHODS)
def test_quarter_turn_in_the_image_plane_rotates_the_image(method):
    rng = np.random.default_rng(0)
    volume = (rng.random((8, 16, 16)) * 0.05).astype(np.float32)
    volume[:, 2:6, 9:14] += 0.2  # something asymmetric to see the turn
    detector = Detector(20, 20, 1.0)
    plain, turned = line_integrals(
        torch.from_numpy(volume),
        (1.0, 1.0, 1.0),
        [Pose(), Pose(rotation_deg=(90, 0, 0))],
        detector,
        method,
    ).numpy()
    assert not np.allclose(plain, np.rot90(plain))
    # Turning the volume +90 degrees about z takes x (columns) to y (rows): what sat at column +c
    # now sits at row +c, which is numpy's clockwise quarter turn (k = -1).
    matches = [np.abs(turned - np.rot90(plain, k)).max() for k in (-1, 0, 1, 2)]
    assert matches[0] < 1e-4 * plain.max()
    assert min(matches[1:]) > 0.05 * plain.max()


@pytest.mark.parametrize("method", METHODS)
def test_detector_offset_moves_the_image(method):
    volume = np.zeros((8, 32, 32), np.float32)
    volume[:, 14:18, 14:18] = 0.2
    detector = Detector(32, 32, 1.0)
    poses = [
        Pose(source_to_isocentre_mm=500, source_to_detector_mm=600),
        Pose(source_to_isocentre_mm=500, source_to_detector_mm=600, detector_offset_mm=(4.0, 0.0)),
    ]
    volume_t = torch.from_numpy(volume)
    plain, shifted = line_integrals(volume_t, (1.0, 1.0, 1.0), poses, detector, method).numpy()
    # Moving the detector 4 mm (4 pixels) along its columns moves the object 4 pixels the other way.
    np.testing.assert_allclose(shifted[:, :-4], plain[:, 4:], atol=1e-5)
    assert np.abs(shifted - plain).max() > 0.5


@pytest.mark.parametrize("method", METHODS)
def test_batched_and_single_renders_agree(method):
    rng = np.random.default_rng(1)
    volume = torch.from_numpy((rng.random((10, 12, 14)) * 0.1).astype(np.float32))
    poses = [Pose(rotation_deg=(10, 20, 30)), Pose(rotation_deg=(-40, 5, 0), detector_offset_mm=(2, -3))]
    detector = Detector(16, 16, 1.5)
    batched = line_integrals(volume, (1.0, 1.5, 0.8), poses, detector, method)
    single = torch.cat([line_integrals(volume, (1.0, 1.5, 0.8), [p], detector, method) for p in poses])
    np.testing.assert_allclose(batched.numpy(), single.numpy(), rtol=1e-6, atol=1e-7)


def test_rotation_matrix_is_proper_and_zyx():
    matrix = rotation_matrix((30, -20, 75)).numpy()
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(matrix) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation_matrix((90, 0, 0)).numpy() @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_transfer_function_interpolates_and_is_flat_outside():
    points = check_control_points([[-1000, 0.0], [0, 0.0], [1000, 0.1], [2000, 0.5]])
    values = torch.tensor([-3000.0, -1000.0, 500.0, 1000.0, 1500.0, 9000.0])
    np.testing.assert_allclose(apply_transfer(values, points).numpy(), [0, 0, 0.05, 0.1, 0.3, 0.5], atol=1e-6)
    for bad in ([[0, 0.1]], [[0, 0.1], [0, 0.2]], [[0, 0.1], [10, -0.1]]):
        with pytest.raises(ValueError):
            check_control_points(bad)
    jittered = jitter_control_points(points, np.random.default_rng(0), 500.0, 0.5)
    assert check_control_points(jittered) == jittered  # still increasing, non-negative
    assert jittered != points


def test_slice_and_ray_methods_agree_on_an_oblique_view():
    # Two different discretisations of one integral: on a smooth volume they must nearly coincide.
    axis = np.linspace(-1, 1, 20)
    zz, yy, xx = np.meshgrid(axis[:12], axis, axis, indexing="ij")
    volume = torch.from_numpy((0.05 * (1.2 + np.sin(3 * xx) * np.cos(2 * yy) + zz)).astype(np.float32))
    pose = Pose(rotation_deg=(25, 35, -20), detector_offset_mm=(3, -2))
    detector = Detector(24, 24, 1.2)
    slices, rays = (line_integrals(volume, (1.0, 0.8, 1.1), [pose], detector, m)[0].numpy() for m in METHODS)
    assert rays.max() > 1.0
    difference = np.abs(slices - rays) / rays.max()
    assert np.median(difference) < 0.005  # the same integral inside the silhouette
    assert difference.max() < 0.06  # rays grazing the box's edges are where the two differ most
    with pytest.raises(ValueError, match="projection method"):
        line_integrals(volume, (1.0, 1.0, 1.0), [pose], detector, "voxels")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inside the volume"):
        line_integrals(volume, (10.0, 10.0, 10.0), [Pose(source_to_isocentre_mm=150)], detector)
