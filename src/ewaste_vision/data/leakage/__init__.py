"""Finding augmented copies of one photo, and scoring a grouping against a known truth.

Exports built by augmentation (Roboflow and the like) hold several copies of each source photo:
flipped, turned by quarter turns (stretched, when the photo was not square), slightly rotated and
sheared, cropped, grayscale, hue-shifted, brightened, blurred, with noise. Perceptual hashes catch
only the first few of these, so copies are found as image retrieval does:

1. shortlist: each image's nearest neighbours under three descriptors: a coarse, colour-free global
   one (an equalised 16x16 thumbnail of the centre under all eight flips and quarter turns), the
   same made from a median-filtered, contrast-limited equalised (CLAHE) image, which finds dark,
   noisy and blurred copies, and a bag of ORB visual words (k-means words, tf-idf; it survives
   crops and stretched turns, which move the global descriptors far away), plus every pair within
   a wide pHash distance;
2. keypoints: ORB keypoints of both images (the second also mirrored) are matched both ways and a
   similarity transform is fitted with RANSAC; the consistent matches are counted;
3. pixels: the pair is aligned by an affine ECC fit on small CLAHE images, started from the
   keypoint transform or, for similar pairs, from the likeliest flips and turns, and the fine
   detail of the two is correlated (`CopyEvidence.dense`). Copies of one photo agree pixel by
   pixel; different photos of look-alike parts share keypoints, but not pixels.

`copy_evidence` measures every shortlisted pair once (the expensive part); `group_copies` applies
thresholds. Confident links (keypoints whose pixels agree, pixels alone, a close pHash) make copy
groups, and two groups merge only where most pairs between them are linked (one chance link does
not join two look-alike parts). Weaker evidence (a few matches, a look-alike nearest neighbour, an
image with no copy and its best candidate) only widens the groups a split keeps together
(`CopyGroups.together`): a leak costs more than a slightly uneven split. OpenCV does the keypoint
and alignment work (it comes with `grad-cam`); without it only the pHash stage runs.

On pcb-components, thresholds chosen on half of the sources and scored on the other half give pair
precision 1.000 and recall 0.991 against `source_groups.csv` (with the source names that show one
board merged); `ewaste data split` then leaves none of the 403 sources with copies in two splits
(BENCHMARKS.md, `bench/bench_leakage.py`).
"""

from ewaste_vision.data.leakage.evidence import CopyEvidence, CopyGroups, CopySettings
from ewaste_vision.data.leakage.grouping import find_augmented_copies, find_copy_groups, group_copies
from ewaste_vision.data.leakage.measure import copy_evidence
from ewaste_vision.data.leakage.scoring import (
    compare_with_source_groups,
    pair_precision_recall,
    read_source_groups,
)

__all__ = [
    "CopyEvidence",
    "CopyGroups",
    "CopySettings",
    "compare_with_source_groups",
    "copy_evidence",
    "find_augmented_copies",
    "find_copy_groups",
    "group_copies",
    "pair_precision_recall",
    "read_source_groups",
]
