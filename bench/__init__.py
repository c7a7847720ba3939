"""``make bench``: edgebundle measured side by side against the tools users would script instead.

``bench/run.py`` is the entry point; ``bench/inputs.py`` generates the inputs, ``bench/measure.py``
runs and times the children, ``bench/rows.py`` and ``bench/delta_rows.py`` define the rows. See bench/README.md.
"""
