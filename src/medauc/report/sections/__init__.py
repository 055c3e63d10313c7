"""The report's sections, in order (:data:`ALL`). Each reads its stage's files and adds blocks and results.

A section never invents a number: values come from the files; sentences are templates filled
from them. When a stage's files are missing the section says which command makes them.
"""

from medauc.report.sections.appendix import definitions_section, environment_section
from medauc.report.sections.augment import augmentation_section, strategies_section
from medauc.report.sections.data import data_section
from medauc.report.sections.explain import explain_section
from medauc.report.sections.external import external_section
from medauc.report.sections.models import models_section
from medauc.report.sections.summary import summary_section

ALL = [summary_section, data_section, augmentation_section, models_section, external_section, strategies_section, explain_section,
       definitions_section, environment_section]
