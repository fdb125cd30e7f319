"""Files: atomic writes and JSON/CSV/PNG helpers (:mod:`.files`), the names of every file in a run directory
(:mod:`.rundir`), the devices a measurement runs on (:mod:`.devices`), and the checks every value read back from a file goes through (:mod:`.validate`)."""
