"""The installer (``installer``): everything a site runs, offline, on a bundle the builder made.

Read it in the order of the flow: core (verify a bundle, feed it to destinations: the site
registry, the NAS), delta_source (rebuild a delta's full target from the site's base), plan
(render, policy, server-side-apply preview, diff), approval, apply (deploy, health, automatic
rollback; the verbs as library functions), revisions and state (what happened), audit, trust,
prune. ``installer/commands/`` only parses options, calls these and prints. It imports the
shared core (:mod:`edgebundle`) and never the builder.
"""
