"""ALARM label space (Wood et al. 2021, Eur Radiol, "Reference-standard report annotation").

The paper trains 8 binary classifiers on head-MRI reports:

* ``abnormal``: the "binary" dataset, presence of *any* clinically relevant abnormality
  (age-appropriate changes, e.g. mild volume loss or a few white-matter foci in an older
  patient, count as normal).
* 7 "granular" categories (Table 2 legend):

  - ``acute_stroke``
  - ``mass``
  - ``atrophy``: volume loss in excess of age
  - ``vascular``: e.g. aneurysms, vascular malformations, micro-haemorrhages
  - ``small_vessel_disease``: moderate or severe small vessel disease (Fazekas)
  - ``white_matter_inflammation``
  - ``encephalomalacia``: any permanent tissue damage, incl. previous surgery and chronic
    sequelae of infarcts or haemorrhages

Declared once here; configs, synthetic data and models refer to these names.
"""

from __future__ import annotations

BINARY_LABEL = "abnormal"

GRANULAR_CATEGORIES: tuple[str, ...] = (
    "acute_stroke",
    "mass",
    "atrophy",
    "vascular",
    "small_vessel_disease",
    "white_matter_inflammation",
    "encephalomalacia",
)

ALL_LABELS: tuple[str, ...] = (BINARY_LABEL, *GRANULAR_CATEGORIES)
