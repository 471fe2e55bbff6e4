"""Heatmaps and their quality scores: which parts of an image a model's decision rests on.

gradcam    Grad-CAM for every class from one backbone pass; upsampling and colour scales
methods    the registry of CAM methods (the fast Grad-CAM and pytorch-grad-cam's others)
render     overlays and per-image panels, written as metadata-free PNGs
quality    pointing game, energy in boxes and ROAD against YOLO boxes, with a centre baseline
run        `explain_paths`, behind `ewaste explain`
"""

from ewaste_vision.explain.gradcam import all_class_gradcam, gradcam_from_features, upsample_and_normalise
from ewaste_vision.explain.methods import available_cam_methods, class_activation_maps, get_cam_method
from ewaste_vision.explain.quality import cam_quality, centre_gaussian, energy_in_boxes, pointing_game
from ewaste_vision.explain.run import ExplainSummary, explain_paths

__all__ = [
    "ExplainSummary",
    "all_class_gradcam",
    "available_cam_methods",
    "cam_quality",
    "centre_gaussian",
    "class_activation_maps",
    "energy_in_boxes",
    "explain_paths",
    "get_cam_method",
    "gradcam_from_features",
    "pointing_game",
    "upsample_and_normalise",
]
