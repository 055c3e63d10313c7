"""The built-in synthetic brain-MRI data set: four classes of T1-like slices of virtual subjects, with lesion masks.

``ensure_phantom(cfg)`` returns a cached copy (generated on first use); ``generate_phantom``
writes one into a given folder. See ``generate.py`` for the layout.
"""

from medauc.data.phantom.cache import ensure_phantom, phantom_key
from medauc.data.phantom.design import CLASSES, class_counts
from medauc.data.phantom.generate import generate_phantom

__all__ = ["CLASSES", "class_counts", "ensure_phantom", "generate_phantom", "phantom_key"]
