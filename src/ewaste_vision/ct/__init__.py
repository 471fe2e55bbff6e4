"""CT volumes: reading them (`volume`), checking a folder of them (`check`) and procedural device
volumes with matching RGB photos for demos and tests (`synth_ct`).

Needs numpy and SimpleITK only, not torch, so the data tools run on a machine without it.
"""
