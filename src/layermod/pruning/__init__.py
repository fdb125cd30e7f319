"""Removing layers: the units a model can lose (:mod:`.units`), plans (:mod:`.plans`: rank, select, budget, the
plan file), the comparison of methods at one budget (:mod:`.study`) and the ``prune`` run (:mod:`.run`)."""
