"""Mixed FP16 plans for strongly typed engines and the ``talkrt check`` verdicts.

gates (task-level gate metrics), analysis (the FP32 graph prepared for a plan),
rewrite (the mixed FP16 graph and its FP32 emulation, nodes kept in FP32 with
their reasons), evaluation (gates of the emulated plan, auto's sensitivity),
report (PrecisionReport), plan (``plan_precision``, calibration inputs) and check
(``talkrt check``).
"""
