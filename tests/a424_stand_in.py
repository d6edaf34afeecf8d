"""A synthetic stand-in for the A424 atlas folder, for test runs without the real (GPL-3.0, never vendored) files.

`write_a424_stand_in(folder)` writes the four files the tests read, under the real names and in the real formats,
so that the code under test cannot tell the difference:

* `A424+2mm.nii.gz`: the real grid (91 x 109 x 91 voxels of 2 mm, the FSL MNI152 affine, sform/qform code 4 = MNI),
  float32 storage of integer labels 1..424, every label present. The layout is a Voronoi partition of a brain-shaped
  ellipsoid with the real atlas's label ranges: 1-180 cortex of the right hemisphere, 181-360 their mirror images on
  the left, 361-396 deep (subcortical) regions, 397-424 cerebellar regions at the back and bottom.
* `A424_Coordinates.dat`: `label<TAB>x<TAB>y<TAB>z`, CRLF line endings, 424 rows, MNI mm as even integers (the label
  centroids rounded to the 2 mm grid), no final newline.
* `A424_Labels_AA-AAc_main_maps.csv`: the real header (UTF-8 with BOM, CRLF) and columns; each level (AA-7, AA-24,
  AA-50, and the cortex-only AAc-6, AAc-22) assigns spatially compact groups of regions. AA-7 uses the real seven
  network names, subcortical regions forming "Subcortical"; the cortex-only levels leave labels 361-424 empty.
* `A424_example_fMRI.dat`: 99 timepoints x 424 regions, tab-separated positive intensities around 1e4.

Nothing here is derived from the real atlas: the numbers come from a seeded random generator and geometry alone.
"""

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.spatial import cKDTree

SHAPE = (91, 109, 91)
AFFINE = np.array([[-2.0, 0, 0, 90], [0, 2.0, 0, -126], [0, 0, 2.0, -72], [0, 0, 0, 1]])
CENTRE, RADII = np.array([0.0, -18.0, 8.0]), np.array([68.0, 88.0, 62.0])  # brain-shaped ellipsoid, MNI mm
CORTEX, SUBCORTEX, CEREBELLUM = 180, 18, 14  # regions per hemisphere: labels 1-360, 361-396, 397-424
AA7 = [
    ("VI", "Visual"),
    ("VS", "Ventral Salience"),
    ("CE", "Central Executive"),
    ("SM", "Sensorimotor"),
    ("DM", "Default Mode"),
    ("DS", "Dorsal Salience"),
    ("SC", "Subcortical"),
]
LEVELS = ["AA-7", "AA-24", "AA-50", "AAc-6", "AAc-22"]
HEADER = ["A424", "Nodes", "ROI"] + [column for level in LEVELS for column in (level, "Abbreviation", "Name")]


def write_a424_stand_in(folder: Path, seed: int = 0) -> Path:
    """Write the four stand-in files into `folder` (created if needed) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    volume, coordinates = _label_volume(rng)
    image = nib.Nifti1Image(volume.astype(np.float32), AFFINE)
    image.header.set_sform(AFFINE, code=4)
    image.header.set_qform(AFFINE, code=4)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, folder / "A424+2mm.nii.gz")
    rows = [f"{label}\t{x}\t{y}\t{z}" for label, (x, y, z) in enumerate(coordinates.tolist(), start=1)]
    (folder / "A424_Coordinates.dat").write_bytes("\r\n".join(rows).encode())
    _write_labels_table(folder / "A424_Labels_AA-AAc_main_maps.csv", coordinates)
    _write_example_recording(folder / "A424_example_fMRI.dat", coordinates, rng)
    return folder


def _label_volume(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The label volume and the region coordinates (centroids rounded to even mm), labels in the A424 ranges."""
    index = np.indices(SHAPE).reshape(3, -1).T
    world = nib.affines.apply_affine(AFFINE, index)
    radius = np.linalg.norm((world - CENTRE) / RADII, axis=1)  # 1 on the ellipsoid surface
    inside = radius <= 1
    x, y, z = world.T
    cerebellar = inside & (y < -50) & (z < -20)
    right = x >= 4  # mirror images (x -> -x) stay on the grid: voxel i <-> 90 - i
    pools = [
        right & inside & (radius > 0.7) & ~cerebellar,  # cortex
        right & (radius < 0.4),  # deep regions
        right & cerebellar,
    ]
    seeds = []
    for pool, count in zip(pools, (CORTEX, SUBCORTEX, CEREBELLUM), strict=True):
        chosen = np.flatnonzero(pool)[_spread(world[pool], count, rng)]
        mirrored = np.ravel_multi_index(((SHAPE[0] - 1) - index[chosen, 0], *index[chosen, 1:].T), SHAPE)
        seeds += [chosen, mirrored]  # right hemisphere, then the same regions on the left
    seeds = np.concatenate(seeds)
    assert len(np.unique(seeds)) == 424
    labels = np.zeros(index.shape[0], dtype=np.int64)
    labels[inside] = cKDTree(world[seeds]).query(world[inside])[1] + 1  # each seed voxel is its own nearest seed
    centroids = np.stack([np.bincount(labels, weights=world[:, k])[1:] for k in range(3)], 1)
    centroids /= np.bincount(labels)[1:, None]
    return labels.reshape(SHAPE), (2 * np.round(centroids / 2)).astype(int)


def _spread(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` well-spread rows of `points` (farthest-point sampling from a random start)."""
    chosen = [int(rng.integers(len(points)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    for _ in range(count - 1):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)


def _groups(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Spatially compact groups (k-means), numbered 0..count-1 from back (low y) to front, none empty."""
    centres = points[_spread(points, count, rng)]
    for _ in range(20):
        group = cKDTree(centres).query(points)[1]
        centres = np.stack([points[group == k].mean(0) if (group == k).any() else centres[k] for k in range(count)])
    group = cKDTree(centres).query(points)[1]
    order = np.argsort(np.argsort(centres[:, 1]))
    assert len(np.unique(group)) == count
    return order[group]


def _write_labels_table(path: Path, coordinates: np.ndarray) -> None:
    """Region names and network assignments in the columns of the real table; hemispheres share assignments."""
    rng = np.random.default_rng(1)
    folded = np.column_stack([np.abs(coordinates[:, 0]), coordinates[:, 1:]])  # a region and its mirror: same groups
    cortex, deep = np.arange(360), np.arange(360, 396)
    columns = {}
    aa7 = np.full(424, 6)  # Subcortical
    not_deep = np.setdiff1d(np.arange(424), deep)
    aa7[not_deep] = _groups(folded[not_deep], 6, rng)
    columns["AA-7"] = [(k + 1, *AA7[k]) for k in aa7]
    for level, count, regions in [("AA-24", 24, np.arange(424)), ("AA-50", 50, np.arange(424))]:
        group = _groups(folded[regions], count, rng)
        columns[level] = [(k + 1, f"n{k + 1}", f"Synthetic network {k + 1}") for k in group]
    for level, count in [("AAc-6", 6), ("AAc-22", 22)]:
        group = _groups(folded[cortex], count, rng)
        names = AA7[:6] if count == 6 else [(f"c{k + 1}", f"Synthetic cortical network {k + 1}") for k in range(22)]
        columns[level] = [(k + 1, *names[k]) for k in group] + [("", "", "")] * 64
    kinds = ["cortical"] * 360 + ["subcortical"] * 36 + ["cerebellar"] * 28
    with open(path, "w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)  # CRLF line endings, as the real table
        writer.writerow(HEADER)
        for i in range(424):
            side = "R" if coordinates[i, 0] > 0 else "L"
            cells = [i + 1, f"{side}_S{i + 1:03d}", f"Synthetic {kinds[i]} region {i + 1}"]
            writer.writerow(cells + [cell for level in LEVELS for cell in columns[level][i]])


def _write_example_recording(path: Path, coordinates: np.ndarray, rng: np.random.Generator) -> None:
    """99 x 424 BOLD-like intensities: a baseline per region, slow shared fluctuations, noise; one decimal."""
    timepoints = 99
    baseline = rng.uniform(7000, 13000, size=424)
    slow = np.cumsum(rng.normal(size=(timepoints, 4)), axis=0)  # four random-walk sources
    weights = np.tanh(coordinates / 60.0) @ rng.normal(size=(3, 4)) + rng.normal(scale=0.3, size=(424, 4))
    fluctuation = 0.004 * slow @ weights.T + 0.01 * rng.normal(size=(timepoints, 424))
    series = baseline * (1 + fluctuation)
    assert (series > 0).all()
    path.write_text("\n".join("\t".join(f"{value:.1f}" for value in row) for row in series) + "\n")
