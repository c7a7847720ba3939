"""Hostile input for the tests: a coverage-guided fuzzer, its targets, and the bad-bundle corpus.

- :mod:`tests.hostile.fuzz`: a small coverage-guided mutational fuzzer (line/edge coverage via
  ``sys.settrace`` over the parser modules only) with hang and memory guards.
- :mod:`tests.hostile.targets`: the parsers under test, their seeds and Hypothesis strategies.
- :mod:`tests.hostile.corpus`: at least 200 bad bundles made from one good one, by family.
"""
