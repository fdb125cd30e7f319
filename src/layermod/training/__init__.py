"""Training: its config (:mod:`.config`), the loop (:mod:`.train`), a run directory with checkpoints, resume and
curve tracking (:mod:`.fit`), augmentation (:mod:`.augment`) and a checkpoint's accuracy (:mod:`.evaluation`)."""
