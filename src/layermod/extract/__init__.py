"""From a model to features: which layers exist and which are measured (:mod:`.layers`: discovery, the auto
points, selection by name, glob or index), and their outputs for a batch of samples, a few layers at a time within a
memory budget (:mod:`.features`)."""
