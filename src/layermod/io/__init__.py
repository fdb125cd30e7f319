"""Files: atomic writes and JSON/CSV/PNG helpers (:mod:`.files`), the names of every file in a run directory
(:mod:`.rundir`), and the checks every value read back from a file goes through (:mod:`.validate`)."""
