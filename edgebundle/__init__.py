"""The shared core of edgebundle: the bundle format and its order of trust.

Both sides import this package and nothing else of each other's: the builder (``bundler``) writes
what these modules define, the installer (``installer``) reads and proves it. It holds the
format (layout, tar dialect, media types, the signed root, compression, the parts index, patch
*decoding*, rebuilding a delta's full target), trust (digests, DSSE signing, trust updates, the
verifier) and the pieces both command lines share (bounded YAML/JSON documents, the registry
client, progress, free-space checks, CLI plumbing).

Invariants (tests/test_architecture.py keeps them):
- Nothing here imports ``bundler`` or ``installer``.
- ``installer`` never imports ``bundler``: an installer on a site carries no build machinery
  (spec, lock, planners, encoders).
- No import cycles among product modules, function-local imports included.
"""
