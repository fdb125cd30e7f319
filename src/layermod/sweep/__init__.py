"""Sweeps: many runs of one command from a TOML spec, on one machine or a Ray cluster.

:mod:`~layermod.sweep.executor` runs a function over items (in this process, in warm worker processes, or on
Ray actors); :mod:`~layermod.sweep.processes` and :mod:`~layermod.sweep.rayworkers` are its two parallel
backends; :mod:`~layermod.sweep.spec` reads and expands a spec into items with stable ids;
:mod:`~layermod.sweep.run` keeps one run directory per item, resumable and shardable; and
:mod:`~layermod.sweep.results` gathers the items' curves into one tidy table and a summary figure.
"""
