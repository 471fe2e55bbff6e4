"""CT volumes: reading them (`volume`), checking a folder of them (`check`), and procedural device
volumes with photos of their outside for demos and tests (`synth_ct`). Rendering X-rays from them
(`drr`, `randomise`, `render_job`) builds on `volume.Volume` and `volume.find_volumes`.

Reading and synthesis need numpy and SimpleITK only, not torch, so the data tools run without it.
"""
