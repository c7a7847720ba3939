"""The builder (``bundle``): spec -> ``bundles.lock`` -> one signed bundle, a delta, media.

Build-host only: nothing here runs at a site. It reads the spec and lock (spec, documents,
lockfile), pulls pinned content (edgebundle.registry), packs models (modelpack, gguf), writes the
bundle once (build), plans deltas (delta, patch encoders, patch_gguf), cuts parts (split), writes
field media (media, runbook, wheelhouse) and proves manifests before they ship (lint, kubeschema;
lint runs the installer's own renderer and policy so that the site re-checks, never discovers).
The format and its trust are the shared core, :mod:`edgebundle`.
"""
