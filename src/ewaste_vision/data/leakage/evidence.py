"""The copy finder's settings, its measurements of candidate pairs, and the groups they close into."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ewaste_vision.data.dedup import union_find


@dataclass(frozen=True)
class CopySettings:
    """How many neighbours are checked and which evidence links two images.

    Confident links make copy groups (`CopyGroups.copies`); uncertain links only widen the groups
    a split keeps together (`CopyGroups.together`): a copy left in the test split inflates the
    score, while two unrelated images kept together cost only a slightly uneven split.

    Attributes:
        candidates: nearest neighbours per image under the global descriptor, checked with keypoints.
        word_candidates: nearest neighbours per image under the bag of visual words, checked too.
        min_inliers: keypoint matches consistent with one similarity transform that make a copy.
        phash_distance: invariant-pHash distance (of 64 bits) that makes a copy by itself.
        uncertain_inliers: fewer consistent matches that keep two images together.
        uncertain_phash: a larger pHash distance that keeps two images together.
        uncertain_similarity: global-descriptor similarity at which two images that are each
            other's nearest neighbour are kept together (blurred close-ups have few keypoints).
        dense_candidates: nearest neighbours per image under a contrast-equalised thumbnail
            (it finds dark, noisy and blurred copies), checked too.
        search_similarity: pairs at least this similar under either thumbnail are also aligned
            pixel by pixel from scratch (without keypoints), which costs about 10 ms a pair.
        min_dense: the dense agreement (see `CopyEvidence.dense`) keypoint copies must also reach:
            look-alike parts share keypoints but not pixels.
        dense_alone: dense agreement that makes a copy by itself.
        uncertain_dense: a lower dense agreement that keeps two images together.
        min_linked_share: confident links join two groups of copies only where at least this
            share of the pairs between them is linked (see `CopyEvidence.linked_groups`); the
            split still keeps them together.
        orphan_dense: an image with no copy is kept together with the candidate it agrees with
            best (dense), where the agreement reaches this.
        orphan_similarity: ... and with its most similar candidate, where the similarity reaches this.
    """

    candidates: int = 12
    word_candidates: int = 6
    min_inliers: int = 8
    phash_distance: int = 10
    uncertain_inliers: int = 8
    uncertain_phash: int = 10
    uncertain_similarity: float = 0.8
    dense_candidates: int = 12
    search_similarity: float = 0.6
    min_dense: float = 0.5
    dense_alone: float = 0.85
    uncertain_dense: float = 0.6
    min_linked_share: float = 0.5
    orphan_dense: float = 0.5
    orphan_similarity: float = 0.7


@dataclass
class CopyGroups:
    """Group ids per image (0, 1, 2, ... by first appearance; -1 for unreadable images).

    Attributes:
        copies: groups of copies of one photo (confident links).
        together: `copies` joined by uncertain links: what a split keeps in one split.
    """

    copies: list[int]
    together: list[int]


@dataclass
class CopyEvidence:
    """Measurements of candidate pairs (see `copy_evidence`); rows index `readable`.

    Attributes:
        size: number of images (readable or not).
        readable: index of each readable image, in order.
        md5: file digest per image ("" where unreadable); identical files are always copies.
        pairs: (m, 2) rows of `readable`, first < second.
        phash: (m,) invariant-pHash distance of each pair.
        similarity: (m,) global-descriptor similarity (cosine, best of eight flips and turns).
        mutual_nearest: (m,) each image is the other's nearest neighbour under that similarity.
        inliers: (m,) consistent keypoint matches.
        dense: (m,) agreement of the two images once aligned pixel by pixel: the correlation of
            their fine detail (band-pass) after an affine alignment started from the keypoint
            transform or, for similar pairs, searched from each likely flip and turn; -1 where
            not measured or the overlap is too small. Copies of one photo agree; different
            photos of look-alike parts do not, however many keypoints they share.
    """

    size: int
    readable: list[int]
    md5: list[str]
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=int))
    phash: np.ndarray = field(default_factory=lambda: np.zeros(0))
    similarity: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mutual_nearest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dense: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(
        self,
        pairs: np.ndarray,
        phash: np.ndarray,
        similarity: np.ndarray,
        mutual_nearest: np.ndarray,
        inliers: np.ndarray,
        dense: np.ndarray | None = None,
    ) -> None:
        """Set the measured pairs; `phash` is the full (r, r) distance matrix; `dense` -1 when None."""
        self.pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
        self.phash = phash[self.pairs[:, 0], self.pairs[:, 1]].astype(float)
        self.similarity = np.asarray(similarity, dtype=float)
        self.mutual_nearest = np.asarray(mutual_nearest, dtype=bool)
        self.inliers = np.asarray(inliers, dtype=float)
        self.dense = np.full(len(self.pairs), -1.0) if dense is None else np.asarray(dense, dtype=float)

    def restricted(self, keep: Sequence[int]) -> CopyEvidence:
        """The evidence among the images `keep` (indexes of images) only, renumbered in that order."""
        position = {index: new for new, index in enumerate(keep)}
        readable = [position[index] for index in self.readable if index in position]
        row_of_new = {self.readable[row]: row for row in range(len(self.readable))}
        new_row = {row_of_new[index]: rank for rank, index in enumerate(i for i in keep if i in row_of_new)}
        inside = np.array([a in new_row and b in new_row for a, b in self.pairs.tolist()], dtype=bool)
        subset = CopyEvidence(len(keep), sorted(readable), [self.md5[index] for index in keep])
        subset.pairs = np.array([[new_row[a], new_row[b]] for a, b in self.pairs[inside].tolist()], dtype=int)
        subset.pairs = subset.pairs.reshape(-1, 2)
        subset.phash, subset.similarity = self.phash[inside], self.similarity[inside]
        subset.mutual_nearest, subset.inliers = self.mutual_nearest[inside], self.inliers[inside]
        subset.dense = self.dense[inside]
        return subset

    def groups(self, linked: np.ndarray) -> list[int]:
        """Group ids closing the pairs where `linked` is True (and identical files) transitively."""
        find, union = union_find(self.size)
        first_with_md5: dict[str, int] = {}
        for index in self.readable:
            union(index, first_with_md5.setdefault(self.md5[index], index))
        for first, second in self.pairs[linked].tolist():
            union(self.readable[first], self.readable[second])
        readable = set(self.readable)
        ids: dict[int, int] = {}
        return [ids.setdefault(find(i), len(ids)) if i in readable else -1 for i in range(self.size)]

    def linked_groups(self, linked: np.ndarray, share: float) -> list[int]:
        """Like `groups`, but two groups merge only where at least `share` of the pairs between
        them are linked (average linkage), the strongest links (`dense`, then `inliers`) first.

        All copies of one photo are copies of each other, so a true merge has links between most
        of its members; two look-alike parts are joined by one or two chance links.
        """
        if share <= 0:
            return self.groups(linked)
        members: dict[int, list[int]] = {}
        root: dict[int, int] = {}
        first_with_md5: dict[str, int] = {}
        for index in self.readable:
            first = first_with_md5.setdefault(self.md5[index], index)
            root[index] = root[first] if first != index else index
            members.setdefault(root[index], []).append(index)
        linked_pairs = [(self.readable[a], self.readable[b]) for a, b in self.pairs[linked].tolist()]
        known = {frozenset(pair) for pair in linked_pairs}
        known |= {frozenset((a, b)) for group in members.values() for a in group for b in group if a != b}
        order = np.lexsort((-self.inliers[linked], -self.dense[linked]))
        for position in order.tolist():
            first, second = root[linked_pairs[position][0]], root[linked_pairs[position][1]]
            if first == second:
                continue
            between = sum(frozenset((a, b)) in known for a in members[first] for b in members[second])
            if between >= share * len(members[first]) * len(members[second]):
                if len(members[first]) < len(members[second]):
                    first, second = second, first
                for index in members.pop(second):
                    root[index] = first
                    members[first].append(index)
        ids: dict[int, int] = {}
        return [ids.setdefault(root[i], len(ids)) if i in root else -1 for i in range(self.size)]
