"""Label spaces of the three papers: ALARM's categories, Cross-DL's region x type matrix, the spine findings."""
