"""Small standard-library helpers shared by every subpackage: the single source of truth for them.

- :mod:`velvet.utils.atomic`: atomic file and directory writes;
- :mod:`velvet.utils.hashing`: sha256 of files and strings;
- :mod:`velvet.utils.paths`: the velvet cache root.

This package imports nothing from the rest of velvet and no third-party package, so any
subpackage (``velvet.data``, ``velvet.hub``, ``velvet.index`` ...) can use it without import
cycles or heavy imports. Import the submodules explicitly.
"""
