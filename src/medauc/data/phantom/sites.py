"""Virtual hospitals: named scanner-and-population presets for the phantom (``phantom.site``).

A site changes how subjects are drawn and imaged, never the anatomy generator, the lesions or the
class plan: its scanner (grey/white contrast, noise, bias field, resolution loss, gamma, gain),
its protocol (slice spacing, the mix of slice planes) and its population (head size, and
ventricles enlarged by age-like atrophy). The default site ``""`` reproduces the phantom exactly as
it was before sites existed (every range is the one it always drew from, in the same order), so
the cache and every earlier run keep their images. The class counts come from
:func:`medauc.data.phantom.design.class_counts` alone: a site never changes the class balance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from medauc.errors import DataError


def _planes(sagittal: float, coronal: float, axial: float) -> Mapping[str, float]:
    return MappingProxyType({"sagittal": sagittal, "coronal": coronal, "axial": axial})


@dataclass(frozen=True)
class Site:
    """Ranges (low, high) drawn uniformly once per subject; shares in [0, 1]."""

    name: str
    description: str
    head_size: tuple[float, float] = (0.92, 1.08)  # isotropic head scale against the template
    ventricles: tuple[float, float] = (-0.12, 0.38)  # ventricle enlargement (atrophy > 0)
    lowres_share: float = 0.35  # subjects scanned at a lower resolution
    downsample: tuple[float, float] = (1.3, 2.2)  # resolution loss factor of those subjects
    blur: tuple[float, float] = (0.2, 0.9)  # px of Gaussian blur of the others
    bias_sigma: float = 0.12  # std of the log bias field
    noise: tuple[float, float] = (0.015, 0.06)  # Rician noise std, white matter = 1
    gamma: tuple[float, float] = (0.75, 1.35)
    contrast: tuple[float, float] = (0.75, 1.3)  # grey/white contrast, 1 = the template's
    white: tuple[float, float] = (100.0, 165.0)  # grey value of white matter
    spacing_mm: tuple[float, float] = (2.0, 4.0)  # distance between a subject's slices (slice thickness)
    plane_weight: Mapping[str, float] = field(default_factory=lambda: _planes(0.4, 0.4, 0.2))


SITES: dict[str, Site] = {
    "": Site("", "the phantom's own hospital (the default)"),
    "b": Site(
        "b", "an older 1.5 T scanner in a hospital with an older population: lower contrast and signal, more noise, "
             "stronger bias, mostly low resolution, thick axial-heavy slices; smaller heads, larger ventricles (atrophy)",
        head_size=(0.88, 1.02), ventricles=(0.15, 0.6), lowres_share=0.7, downsample=(1.5, 2.5), blur=(0.6, 1.2),
        bias_sigma=0.22, noise=(0.04, 0.09), gamma=(0.9, 1.5), contrast=(0.65, 1.05), white=(85.0, 140.0),
        spacing_mm=(4.0, 6.0), plane_weight=_planes(0.2, 0.2, 0.6),
    ),
    "c": Site(
        "c", "a new 3 T scanner in a hospital with a younger population: high contrast and signal, little noise, "
             "a stronger bias field, high resolution, thin slices; larger heads, small ventricles",
        head_size=(0.96, 1.1), ventricles=(-0.15, 0.12), lowres_share=0.05, downsample=(1.2, 1.5), blur=(0.1, 0.4),
        bias_sigma=0.2, noise=(0.008, 0.025), gamma=(0.7, 1.0), contrast=(1.1, 1.5), white=(130.0, 195.0),
        spacing_mm=(1.0, 2.5), plane_weight=_planes(0.45, 0.45, 0.1),
    ),
}


def get_site(name: str) -> Site:
    """The preset ``name`` (``phantom.site``); DataError listing the presets for an unknown one."""
    if name not in SITES:
        raise DataError(f"phantom.site={name!r} is not a known site; sites: "
                        + ", ".join(f"{k!r} ({v.description.split(':')[0]})" for k, v in SITES.items()))
    return SITES[name]
