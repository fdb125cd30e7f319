"""From features to numbers: the settings of every measurement, each default written once (:mod:`.config`:
``GraphConfig``, ``DrawConfig``), the kNN graph (:mod:`.graph`), its modularity and the label-shuffle null
(:mod:`.modularity`), and linear CKA (:mod:`.similarity`). To change k or the metric, look in :mod:`.config`."""
