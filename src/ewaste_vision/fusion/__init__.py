"""RGB + X-ray fusion (source document 002): two trained classifier streams joined by a fusion layer.

`data` reads the paired folders, `pairing` pairs an RGB image with an X-ray image of its class,
`model` is the two-stream network, `train` runs both stages, `evaluate` and `predict` use a run.
"""
