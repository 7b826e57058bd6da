"""Statistical disclosure control for published cells (the cell key method).

Noise is added to counts and magnitudes through a perturbation table (p-table) indexed by a
cell's original count and its cell key, so that the same cell always gets the same noise.
"""
