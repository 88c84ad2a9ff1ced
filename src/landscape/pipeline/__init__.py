"""The pipeline layer: the only code that knows params sections, stage names and the artifact tree.

``layout`` names every artifact path; ``params`` reads sections of ``params.yaml``;
``validate`` checks a whole params file; one module per stage holds its config and
``run(...)``; ``tables`` reads stage outputs into DataFrames for ``landscape.stats`` and the
notebooks; ``dvcfile`` generates ``dvc.yaml`` (stage entries and their import-closure deps).
Methods (curvature, probes, bounds, dynamics, stats) never import this package.
"""
