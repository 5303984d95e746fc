"""Resumable jobs: a video planned into units, each rendered losslessly into a work directory, then one encode.

A job (``--resumable``, ``--work-dir``, ``--shard``, ``--ray``) runs the same streaming core as a
plain run, one unit at a time, and differs only in where the frames go:

1. ``units.plan_units``: one decoding pass finds the clip plan (or a sequential model's restart
   points) and cuts the frame span into units that start at a clip start or a restart point;
2. ``manifest``: the job's identity (input, settings, model files, code, the fixed memory budget and
   pixel format) is written once into ``manifest.json``; a rerun compares it and refuses a change;
3. ``units.render_unit``: a unit's frames, in the encoder's pixel format, go into a lossless FFV1
   file with per-frame CRC-32s (written ``.partial``, then renamed, then recorded);
4. ``driver.assemble``: when every unit is recorded, the frames are read back, checked against their
   CRCs, and fed with the input's own timestamps to the same writer a plain run uses.

The executors (``driver``: in this process, or one shard of N; ``ray_executor``: Ray actors) only
decide which process renders which unit. docs/jobs.md has the manifest format and what is guaranteed.
"""
