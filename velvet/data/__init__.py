"""The data layer: volume I/O, the preprocessing contract and transforms, reports and tokenisation,
manifests, the volume cache, datasets, the DataModule and the phantom generator.

Submodules are imported explicitly (``from velvet.data.io import read_volume``) so that importing
one part does not load the dependencies of all the others.
"""
