"""Acquisition styles of the synthetic sites and the abdominal phantom they image.

A case is one random anatomy (body outline, subcutaneous fat, spine, liver, two kidneys in their perirenal fat,
spleen) defined in world millimetres. Each site samples it on its own voxel grid (spacing, field-of-view shape,
origin, on-disk orientation) and renders intensities its own way (MR T1/T2/fat-suppressed contrast or CT Hounsfield
units, gamma, bias field, Rician or Gaussian noise, partial-volume blur, stored scale and dtype). These are the
differences that separate MRI sites, and CT from MR, in the domain-generalisation literature.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}

# Grid of the reference site: the ``shape`` a user asks for is the siteA grid; other sites cover the same field
# of view with their own spacing, so their shapes differ.
REFERENCE_SPACING = (1.0, 1.0, 3.0)  # mm along R, A, S

# Tissue intensities: MR contrasts on [0, 1] (arbitrary units before the site's scale), CT in Hounsfield units.
# T2 and fat-suppressed T1 invert the organ ordering of T1, the kind of change a CT <-> MR shift brings.
TISSUE_INTENSITY = {
    "t1": {"air": 0.0, "fat": 0.92, "soft": 0.42, "bone": 0.55, "liver": 0.66, "kidney": 0.38, "spleen": 0.30},
    "t2": {"air": 0.0, "fat": 0.70, "soft": 0.35, "bone": 0.25, "liver": 0.22, "kidney": 0.78, "spleen": 0.58},
    "t1fs": {"air": 0.0, "fat": 0.12, "soft": 0.40, "bone": 0.30, "liver": 0.80, "kidney": 0.55, "spleen": 0.45},
    "ct": {"air": -1000.0, "fat": -100.0, "soft": 35.0, "bone": 450.0, "liver": 65.0, "kidney": 160.0, "spleen": 110.0},
}

TISSUE_ORDER = ("air", "fat", "soft", "bone", "liver", "kidney", "spleen")

# Perirenal fat around each kidney, as a fraction of the kidney's radii (about 2.5 to 3.5 mm at a 96 mm field of
# view): in adults the fat is a few mm to over a centimetre thick against a kidney half-width of about 3 cm.
KIDNEY_FAT_CAPSULE = 0.45


@dataclass(frozen=True)
class SiteStyle:
    """How one synthetic site acquires and stores a volume.

    ``spacing`` is in mm along the world R, A, S axes; ``orientation`` is the on-disk axis code (nibabel axcodes,
    e.g. ``"LPS"``: file axis 0 points left ...), so a reader that ignores the affine gets the anatomy flipped or
    transposed. ``noise`` is a fraction of the MR intensity range (CT: times 400 HU). ``bias`` is the amplitude of
    the log multiplicative bias field (MR only). ``scale``/``dtype`` give the stored MR value range;
    ``hu_offset`` shifts CT calibration.
    """

    name: str
    contrast: str
    spacing: tuple[float, float, float]
    orientation: str
    gamma: float
    bias: float
    noise: float
    scale: float
    dtype: str
    origin_shift: tuple[float, float, float]
    hu_offset: float = 0.0

    def for_modality(self, modality: str) -> "SiteStyle":
        """The same site as a CT scanner: HU contrast, no gamma/bias, integer storage."""
        if modality == "MR":
            return self
        return SiteStyle(self.name, "ct", self.spacing, self.orientation, 1.0, 0.0, self.noise, 1.0, "int16",
                         self.origin_shift, self.hu_offset)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


SITES = (
    SiteStyle("siteA", "t1", (1.0, 1.0, 3.0), "RAS", 1.0, 0.05, 0.02, 1000.0, "int16", (0.0, 0.0, 0.0), 0.0),
    SiteStyle("siteB", "t1", (0.8, 0.8, 3.0), "LPS", 0.6, 0.45, 0.03, 4000.0, "uint16", (6.0, -9.0, 22.0), 25.0),
    SiteStyle("siteC", "t2", (1.25, 1.25, 4.0), "LAS", 1.25, 0.15, 0.05, 1.0, "float32", (-4.0, 5.0, -17.0), -20.0),
    SiteStyle("siteD", "t1", (1.5, 1.5, 5.0), "RSA", 0.8, 0.30, 0.08, 600.0, "int16", (2.0, 12.0, 40.0), 10.0),
    SiteStyle("siteE", "t2", (0.9, 0.9, 2.5), "LPI", 0.7, 0.50, 0.04, 2000.0, "int16", (-8.0, 0.0, 5.0), -8.0),
    SiteStyle("siteF", "t1fs", (1.1, 1.1, 3.5), "PRS", 1.2, 0.25, 0.05, 3000.0, "int16", (0.0, -4.0, -30.0), 15.0),
)
MAX_DOMAINS = len(SITES)


def field_of_view(shape: tuple[int, int, int]) -> np.ndarray:
    """(3,) mm covered along R, A, S by the reference grid of ``shape`` voxels."""
    return np.asarray(shape, dtype=np.float64) * np.asarray(REFERENCE_SPACING)


def site_grid(site: SiteStyle, fov: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape (R,A,S voxels) and 4x4 RAS affine of the site's canonical grid covering ``fov`` mm."""
    spacing = np.asarray(site.spacing)
    shape = tuple(int(max(1, round(f / s))) for f, s in zip(fov, spacing))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = np.asarray(site.origin_shift) - (np.asarray(shape) - 1) * spacing / 2.0
    return shape, affine


@dataclass
class _Organ:
    label_or_tissue: str
    centre: np.ndarray  # mm
    radii: np.ndarray  # mm
    angle: float  # rotation about S, radians
    lobes: np.ndarray  # (3,) amplitudes of the quadratic shape harmonics
    fat_capsule: float = 0.0  # unlabelled fat shell around the organ, as a fraction of its radii (0: none)


def _random_anatomy(rng: np.random.Generator, fov: np.ndarray) -> dict:
    """One subject: organ ellipsoids with random size/position/rotation/lobulation and a smooth warp field."""
    body_scale = rng.uniform(0.9, 1.08)

    def organ(name, centre, radii, angle_deg, fat_capsule=0.0):
        return _Organ(
            name,
            (np.asarray(centre) + rng.uniform(-0.03, 0.03, 3)) * fov * body_scale,
            np.asarray(radii) * rng.uniform(0.88, 1.12, 3) * fov * body_scale,
            np.deg2rad(angle_deg + rng.uniform(-15, 15)),
            rng.uniform(-0.15, 0.15, 3),
            fat_capsule,
        )

    # The kidneys lie in perirenal fat (inside Gerota's fascia): on T1 their signal is close to muscle's, and it is
    # the fat around them that makes them visible (on CT too); on T2 the bright fat blurs their outline instead.
    organs = [
        organ("liver", (0.17, 0.03, 0.12), (0.19, 0.17, 0.30), 10),
        organ("kidney", (0.17, -0.15, -0.08), (0.055, 0.075, 0.17), 20, KIDNEY_FAT_CAPSULE),
        organ("kidney", (-0.17, -0.15, -0.06), (0.055, 0.075, 0.17), -20, KIDNEY_FAT_CAPSULE),
        organ("spleen", (-0.21, -0.05, 0.15), (0.07, 0.11, 0.20), -25),
    ]
    warp = [(rng.normal(0, 1, 3) * 2 * np.pi / (0.9 * fov.max()), rng.uniform(0, 2 * np.pi),
             rng.uniform(1.0, 3.0) * rng.choice([-1, 1], 3))
            for _ in range(3)]
    return {
        "body_radii": np.array([0.44, 0.36]) * fov[:2] * body_scale,
        "fat_fraction": rng.uniform(0.82, 0.9),
        "spine": (np.array([0.0, -0.25]) * fov[:2] * body_scale, 0.06 * fov[0] * body_scale),
        "rotation": np.deg2rad(rng.uniform(-8, 8)),
        "organs": organs,
        "warp": warp,
        "contrast_jitter": {k: rng.uniform(0.95, 1.05) for k in TISSUE_INTENSITY["t1"]},
    }


def _world_points(shape, affine, anatomy) -> list[np.ndarray]:
    """World coordinates (mm, float32) of the voxel centres relative to the site's origin shift, rotated and warped."""
    # Python floats keep every product in float32 (numpy scalars would promote to float64 and double the cost).
    axes = [(affine[d, 3] + affine[d, d] * np.arange(shape[d]) - anatomy["shift"][d]).astype(np.float32)
            for d in range(3)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    c, s = float(np.cos(anatomy["rotation"])), float(np.sin(anatomy["rotation"]))
    x, y = c * x - s * y, s * x + c * y
    points = [x, y, z]
    for direction, phase, amplitude in anatomy["warp"]:
        wave = np.sin(float(direction[0]) * x + float(direction[1]) * y + float(direction[2]) * z + float(phase))
        points = [p + float(a) * wave for p, a in zip(points, amplitude)]
    return points


def _inside(organ: _Organ, x, y, z, scale: float = 1.0) -> np.ndarray:
    """Voxels inside the organ's lobulated ellipsoid, grown by ``scale`` about its centre."""
    c, s = float(np.cos(organ.angle)), float(np.sin(organ.angle))
    cx, cy, cz = (float(v) for v in organ.centre)
    rx, ry, rz = (float(v) * scale for v in organ.radii)
    l0, l1, l2 = (float(v) for v in organ.lobes)
    dx, dy, dz = x - cx, y - cy, z - cz
    u = (c * dx + s * dy) / rx
    v = (-s * dx + c * dy) / ry
    w = dz / rz
    r2 = u * u + v * v + w * w + 1e-9
    lobulation = (l0 * u * v + l1 * u * w + l2 * (u * u - v * v)) / r2
    return np.sqrt(r2) < 1.0 + lobulation


def render_tissues(shape, affine, anatomy) -> tuple[np.ndarray, np.ndarray]:
    """-> (tissue index map (R,A,S) uint8 over ``TISSUE_ORDER``, label map (R,A,S) uint8 with ``LABELS`` values)."""
    x, y, z = _world_points(shape, affine, anatomy)
    tissue = np.zeros(shape, dtype=np.uint8)
    body = (x / float(anatomy["body_radii"][0])) ** 2 + (y / float(anatomy["body_radii"][1])) ** 2
    tissue[body < 1.0] = TISSUE_ORDER.index("fat")
    tissue[body < anatomy["fat_fraction"] ** 2] = TISSUE_ORDER.index("soft")
    (cx, cy), radius = anatomy["spine"]
    tissue[(x - float(cx)) ** 2 + (y - float(cy)) ** 2 < float(radius) ** 2] = TISSUE_ORDER.index("bone")
    label = np.zeros(shape, dtype=np.uint8)
    for organ in anatomy["organs"]:
        if organ.fat_capsule > 0:  # drawn first, so it also separates the organ from a neighbour drawn before it
            capsule = _inside(organ, x, y, z, 1.0 + organ.fat_capsule) & (body < 1.0)
            tissue[capsule] = TISSUE_ORDER.index("fat")
            label[capsule] = 0
        inside = _inside(organ, x, y, z) & (body < 1.0)
        tissue[inside] = TISSUE_ORDER.index(organ.label_or_tissue)
        label[inside] = LABELS[organ.label_or_tissue]
    return tissue, label



def _smooth_field(rng: np.random.Generator, shape) -> np.ndarray:
    """Random smooth field over the volume, about [-1, 1] from edge to edge: a receive-coil profile, i.e. a
    gradient in a random (mostly in-plane) direction plus a weaker random quadratic bowl."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    direction = rng.normal(0, 1, 3) * np.array([1.0, 1.0, 0.4])
    direction /= np.linalg.norm(direction)
    quadratic = [grids[0] * grids[1], grids[0] ** 2, grids[1] ** 2, grids[2] ** 2, grids[1] * grids[2]]
    return sum(d * g for d, g in zip(direction, grids)) + 0.2 * sum(rng.normal() * t for t in quadratic)


def render_intensities(tissue: np.ndarray, site: SiteStyle, anatomy: dict, rng: np.random.Generator) -> np.ndarray:
    """Tissue map -> stored intensities of ``site`` (array (R,A,S) in ``site.dtype``)."""
    table = TISSUE_INTENSITY[site.contrast]
    jitter = anatomy["contrast_jitter"]
    values = np.array([table[t] * (jitter[t] if site.contrast != "ct" else 1.0) for t in TISSUE_ORDER],
                      dtype=np.float32)
    image = values[tissue]
    texture = ndimage.gaussian_filter(rng.normal(0, 1, tissue.shape).astype(np.float32), 2.0)
    texture /= max(float(np.abs(texture).max()), 1e-6)
    # Partial-volume blur of about half a voxel: the physical blur grows with the site's voxel size.
    if site.contrast == "ct":
        image = image + 15.0 * texture * (tissue > 0)
        image = ndimage.gaussian_filter(image, (0.5, 0.5, 0.7))
        image = image + site.hu_offset + rng.normal(0, site.noise * 400.0, image.shape)
        return np.clip(np.round(image), -1024, 3071).astype(np.int16)
    image = image * (1.0 + 0.05 * texture)
    image = ndimage.gaussian_filter(image, (0.5, 0.5, 0.7))
    image = np.clip(image, 0, None) ** site.gamma
    image = image * np.exp(site.bias * _smooth_field(rng, image.shape))
    sigma = site.noise
    image = np.sqrt((image + rng.normal(0, sigma, image.shape)) ** 2 + rng.normal(0, sigma, image.shape) ** 2)
    image = image * site.scale
    if np.issubdtype(np.dtype(site.dtype), np.integer):
        info = np.iinfo(site.dtype)
        image = np.clip(np.round(image), info.min, info.max)
    return image.astype(site.dtype)


def render_case(site: SiteStyle, fov: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One subject seen by ``site``: (image (R,A,S), label (R,A,S) uint8, canonical RAS affine 4x4)."""
    anatomy = _random_anatomy(rng, fov)
    anatomy["shift"] = np.asarray(site.origin_shift)
    shape, affine = site_grid(site, fov)
    tissue, label = render_tissues(shape, affine, anatomy)
    return render_intensities(tissue, site, anatomy, rng), label, affine
