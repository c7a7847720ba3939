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

import os as _os
import sys as _sys

# jsonschema imports ``rfc3987_syntax`` whenever it is installed (the CycloneDX validation extra
# pulls it in), and that module compiles a Lark grammar at import: 1.4-1.7 s added to every
# command that reaches jsonschema (the kubernetes client's ``dynamic`` module imports
# kubernetes-validate, oras validates manifests, the SBOM and schema checks). It only checks the
# "iri"/"iri-reference" formats, which no document we write or validate uses. Marking it absent
# makes jsonschema skip those two format checkers instead.
_sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]

# pydantic looks for plugins the first time it builds a schema: it reads the entry points of every
# installed distribution (80 files in our environment, 30 ms on a cold disk). We use none, and
# code another package registers has no business inside the verifier's document checks.
_os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
